"""The metric names the Grafana dashboard and the alert rules query, read out of their PromQL.

Not a PromQL parser: string literals, label matchers, ranges and grouping clauses are cut out,
and what is left that looks like a name, is not a function call and not a keyword is a metric.
"""

from __future__ import annotations

import json
import re

import yaml

from scripts.processes import ROOT

DASHBOARD = ROOT / "deploy/grafana/dashboards/mlops.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)
_CUT = [
    re.compile(r'"(?:[^"\\]|\\.)*"'),  # strings
    re.compile(r"\{[^}]*\}"),  # label matchers
    re.compile(r"\[[^\]]*\]"),  # ranges and subqueries
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),
]
_NAME = re.compile(r"(?<![\w$.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")


def metric_names(expr: str) -> set[str]:
    for pattern in _CUT:
        expr = pattern.sub(" ", expr)
    return {name for name in _NAME.findall(expr) if name.lower() not in KEYWORDS}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", ())]


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def referenced_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is queried ("dashboard: <title>", "alert: <name>")."""
    found: dict[str, set[str]] = {}
    queries = [(f"dashboard: {title}", expr) for title, expr in dashboard_exprs()]
    queries += [(f"alert: {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    for where, expr in queries:
        for name in metric_names(expr):
            found.setdefault(name, set()).add(where)
    return found
