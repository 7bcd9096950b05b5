"""Alert rules and dashboard (deploy/prometheus/alerts.yml, deploy/grafana/dashboards/mlops.json).

promtool (Debian's ``prometheus`` package) checks the rules and runs their unit tests
(deploy/prometheus/alerts_test.yml); a missing promtool fails with how to install it. Every
metric the dashboard or an alert queries must be one app/metrics.py or workers/metrics.py
defines; every alert has a runbook section in docs/operations.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.metrics import GatewayMetrics
from scripts.processes import ROOT
from tests.promql import (
    ALERTS,
    PROMETHEUS_CONFIG,
    alert_rules,
    dashboard_exprs,
    metric_names,
    referenced_metrics,
)
from workers.metrics import WorkerMetrics

ALERTS_TEST = ROOT / "deploy/prometheus/alerts_test.yml"
OPERATIONS = ROOT / "docs/operations.md"
PROMTOOL_INSTALL = """\
  Debian/Ubuntu:  sudo apt-get install prometheus   (brings promtool)
  macOS:          brew install prometheus
  any:            https://prometheus.io/download/ (promtool is in the release archive)"""
BUILTIN = {"up"}  # written by Prometheus itself for every target


def promtool(*args: str | Path) -> str:
    """promtool's output; fails with that output when it exits non-zero."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            f"promtool is required to check the alert rules and was not found on PATH.\n"
            f"Install it:\n{PROMTOOL_INSTALL}",
            pytrace=False,
        )
    done = subprocess.run(
        [found, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


def defined_metrics() -> set[str]:
    """Every sample name the gateway and the workers can expose (families with no child yet
    included), with the process and platform collectors' names."""
    names: set[str] = set()
    for registry in (GatewayMetrics().registry, WorkerMetrics().registry):
        for family in registry.collect():
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_sum", "_count"),
            }.get(family.type, ("",))
            names |= {family.name + suffix for suffix in suffixes}
    return names


# --- promtool -------------------------------------------------------------------------------


def test_the_alert_rules_are_valid():
    assert "SUCCESS" in promtool("check", "rules", ALERTS)


def test_the_prometheus_config_is_valid_and_finds_the_rules():
    assert "1 rule files found" in promtool("check", "config", PROMETHEUS_CONFIG)


def test_every_alert_passes_its_unit_tests():
    assert "SUCCESS" in promtool("test", "rules", ALERTS_TEST)


def test_a_malformed_rule_file_fails_with_promtools_message(tmp_path):
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace("> 0.7", "> > 0.7", 1))
    with pytest.raises(AssertionError, match=r"(?s)promtool check rules.*parse error"):
        promtool("check", "rules", broken)


def test_a_rule_that_no_longer_fires_fails_its_unit_test(tmp_path):
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text().replace("> 0.85", "> 0.95"))
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST.read_text())
    with pytest.raises(AssertionError, match=r"(?s)MlopsRedisMemoryCritical.*got:\[\]"):
        promtool("test", "rules", tmp_path / "alerts_test.yml")


def test_every_alert_is_tested_firing_and_quiet():
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", ())]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']} never fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']} always fires"


# --- runbooks, compose ----------------------------------------------------------------------


def test_every_alert_has_a_summary_severity_and_runbook_section():
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        document, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert document == "docs/operations.md", rule["alert"]
        assert anchor in headings, f"{rule['alert']}: no section #{anchor} in {OPERATIONS.name}"


def test_prometheus_loads_the_rules_in_compose():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]  # relative to the config file
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    mounted = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounted


# --- metric names -----------------------------------------------------------------------------


def test_every_metric_the_dashboard_and_alerts_query_is_defined():
    defined = defined_metrics() | BUILTIN
    undefined = {
        name: sorted(where) for name, where in referenced_metrics().items() if name not in defined
    }
    assert not undefined, f"queried but defined nowhere: {undefined}"


def test_the_name_check_sees_a_misspelt_metric():
    names = metric_names(
        'histogram_quantile(0.5, sum by (model, le) (rate(mlops_batch_rowz_bucket{model="x"}'
        "[$__rate_interval]))) > bool 1e3 and on() time() - up offset 5m"
    )
    assert names == {"mlops_batch_rowz_bucket", "up"}
    assert "mlops_batch_rowz_bucket" not in defined_metrics()


def test_the_dashboard_covers_the_per_model_metrics():
    per_model = [expr for _, expr in dashboard_exprs() if "model" in expr]
    queried = set().union(*(metric_names(expr) for expr in per_model))
    for metric in (
        "mlops_predictions_total",
        "mlops_inference_duration_seconds_bucket",
        "mlops_batch_rows_bucket",
        "mlops_jobs_submitted_total",
        "mlops_model_info",
        "mlops_retrains_total",
        "mlops_model_metric",
        "mlops_drift_psi",
        "mlops_drift_ks_statistic",
        "mlops_drift_class_psi",
        "mlops_drift_detected",
        "mlops_live_quality",
    ):
        assert metric in queried, f"no per-model panel queries {metric}"


def test_latency_is_split_by_route():
    latency = [e for _, e in dashboard_exprs() if "mlops_http_request_duration_seconds" in e]
    assert latency and all("by (route, le)" in expr for expr in latency)
