"""app/services/monitoring.py and the drift metrics: what the gateway makes of the stored drift
checks (fakeredis for Redis; the checks themselves: tests/unit/workers/test_monitoring.py)."""

from __future__ import annotations

import fakeredis
import pytest

from app.metrics import GatewayMetrics
from app.services.catalog import Production
from app.services.monitoring import (
    card_section,
    latest,
    latest_of,
    parse,
    status,
    view,
    with_drift,
)
from core.monitoring import (
    DriftResult,
    FeatureDrift,
    FeatureProfile,
    ReferenceProfile,
    monitoring_key,
)
from core.settings import get_settings
from tests.factories import metadata, run, samples, settings_with, value

PROFILE = ReferenceProfile(
    rows=2,
    source="test",
    features=[FeatureProfile(name="a", edges=[1.0], shares=[0.5, 0.5], sample=[0.0, 2.0])],
)


def production(version: int = 3, profile: ReferenceProfile | None = PROFILE) -> Production:
    meta = metadata(features=("a",), version=version, reference_profile=profile)
    return Production(meta, ("a",), frozenset({"a"}))


def checked(version: int = 3, status: str = "drift", **changes) -> DriftResult:
    fields = {
        "model": "iris",
        "version": version,
        "status": status,
        "checked_at": 1_700_000_000.0,
        "rows": 500,
        "window": 1000,
        "min_rows": 100,
        "psi_threshold": 0.2,
        "ks_p_value": 0.01,
        "features": [
            FeatureDrift(name="a", psi=1.5, ks_statistic=0.6, ks_p_value=1e-9, drifted=True),
            FeatureDrift(name="b<i>", psi=0.01, ks_statistic=0.02, ks_p_value=0.9, drifted=False),
        ],
        "class_psi": 0.05,
        "drifted_features": ["a"],
    }
    return DriftResult(**{**fields, **changes})


# -- status ------------------------------------------------------------------------------------


def test_the_stored_check_of_the_production_version_decides():
    assert status(production(), checked(status="ok"), monitored=True) == "ok"
    assert status(production(), checked(status="drift"), monitored=False) == "drift"


def test_a_check_of_another_version_is_not_the_production_versions():
    assert status(production(4), checked(3), monitored=True) == "pending"
    assert status(production(4), checked(3), monitored=False) == "not_monitored"


def test_a_version_without_a_profile_says_no_profile_never_fails():
    assert status(production(profile=None), None, monitored=True) == "no_profile"
    assert status(production(4, profile=None), checked(3), monitored=True) == "no_profile"


def test_no_production_version():
    assert status(None, checked(), monitored=True) == "no_production_model"


def test_the_view_shows_the_thresholds_and_the_latest_check(monkeypatch):
    settings = settings_with(monkeypatch, MONITORING__PSI_THRESHOLD="0.3")
    body = view(settings, "iris", production(), checked())
    assert body["model_name"] == "iris" and body["production_version"] == 3
    assert (body["status"], body["monitored"]) == ("drift", True)
    assert body["settings"]["psi_threshold"] == 0.3 and body["settings"]["window"] == 1000
    assert body["latest"]["features"][0] == {
        "name": "a", "psi": 1.5, "ks_statistic": 0.6, "ks_p_value": 1e-9, "drifted": True
    }  # fmt: skip


def test_a_model_without_a_settings_table_is_not_monitored():
    body = view(get_settings(), "registered-only", production(), None)
    assert (body["status"], body["monitored"], body["latest"]) == ("not_monitored", False, None)


# -- reading Redis -----------------------------------------------------------------------------


def test_stored_results_are_read_and_garbage_is_ignored(redis_server):
    client = fakeredis.FakeAsyncRedis(server=redis_server)
    sync = fakeredis.FakeRedis(server=redis_server)
    sync.set(monitoring_key("iris"), checked().model_dump_json())
    sync.set(monitoring_key("broken"), b'{"model": "broken"')
    assert run(latest(client, "iris")) == checked()
    assert run(latest(client, "none")) is None
    assert run(latest_of(client, ["iris", "broken", "none"])) == {"iris": checked()}
    assert parse("x", b"[]") is None


# -- metrics -----------------------------------------------------------------------------------


def test_drift_gauges_follow_the_latest_checks():
    metrics = GatewayMetrics()
    metrics.drift.results = {
        "iris": checked(),
        "penguins": checked(version=2, status="not_enough_data", model="penguins", features=[]),
    }
    found = samples(metrics.exposition())
    assert value(found, "mlops_drift_psi", model="iris", version="3", feature="a") == 1.5
    assert (
        value(found, "mlops_drift_ks_statistic", model="iris", version="3", feature="b<i>") == 0.02
    )
    assert value(found, "mlops_drift_ks_p_value", model="iris", version="3", feature="a") == 1e-9
    assert value(found, "mlops_drift_class_psi", model="iris", version="3") == 0.05
    assert value(found, "mlops_drift_detected", model="iris", version="3") == 1
    assert value(found, "mlops_drift_window_rows", model="iris", version="3") == 500
    # a check that judged nothing: when it ran, and nothing else
    assert value(found, "mlops_drift_last_check_timestamp_seconds", model="penguins") == 1.7e9
    assert value(found, "mlops_drift_detected", model="penguins", version="2") is None
    metrics.drift.results = {"iris": checked(version=4, status="ok")}
    found = samples(metrics.exposition())
    assert value(found, "mlops_drift_detected", model="iris", version="4") == 0
    assert value(found, "mlops_drift_psi", model="iris", version="3", feature="a") is None


# -- the card ----------------------------------------------------------------------------------


def test_the_card_gets_the_versions_check_escaped_before_its_end():
    card = "<html><body><h1>card</h1></body></html>"
    combined = with_drift(card, card_section(3, checked()))
    assert combined.startswith("<html><body><h1>card</h1><h2>Drift (latest check)</h2>")
    assert combined.endswith("</body></html>")
    assert "b&lt;i&gt;" in combined and "b<i>" not in combined
    assert "<b>drift</b>" in combined and "1.5000" in combined and "<svg" in combined
    assert "Predicted classes: PSI 0.0500" in combined


@pytest.mark.parametrize("result", [None, checked(version=2)])
def test_the_card_of_a_version_not_checked_says_so(result):
    assert "No drift check of v3 is stored" in card_section(3, result)


def test_the_card_of_a_check_that_judged_nothing_says_why():
    section = card_section(
        3, checked(status="no_profile", features=[], detail="v3 has no reference profile")
    )
    assert "<b>no_profile</b>" in section and "v3 has no reference profile" in section
    assert "<table>" not in section
