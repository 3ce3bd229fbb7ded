"""The PromQL that monitoring/ ships (alert rules, dashboard), and the metric names it queries.

Shared by the unit tests (syntax, structure) and the integration test (every name exists on a
running stack).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MONITORING = os.path.join(REPO, "monitoring")
RULES = os.path.join(MONITORING, "alerts.rules.yml")
RULE_TESTS = os.path.join(MONITORING, "alerts.test.yml")
DASHBOARD = os.path.join(MONITORING, "dashboard.json")
PROMETHEUS_YML = os.path.join(MONITORING, "prometheus.yml")

# Grafana's variables, replaced by what they stand for on the local stack.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$cluster_job": "kvcluster",
    "$proxy_job": "kvproxy",
}

# Series Prometheus makes itself, not the scraped processes.
PROMETHEUS_GENERATED = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS",
                        "ALERTS_FOR_STATE"}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
             "bool", "offset", "inf", "nan"}


def promtool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run promtool (installed by ./run-tests with the Debian `prometheus` package)."""
    exe = shutil.which("promtool")
    assert exe, "promtool is not installed (apt-get install prometheus; ./run-tests does it)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)


def load_dashboard() -> dict:
    with open(DASHBOARD) as f:
        return json.load(f)


def load_rules() -> dict:
    with open(RULES) as f:
        return yaml.safe_load(f)


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for p in dashboard.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, Grafana variables left in."""
    return [(p.get("title", ""), t["expr"]) for p in all_panels(dashboard) for t in p.get("targets", [])]


def variable_metric_names(dashboard: dict) -> set[str]:
    """Metric names in the template variables' `label_values(metric, label)` queries."""
    names = set()
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q.strip())
            assert m, f"variable {v['name']}: unexpected query {q!r}"
            names |= metric_names(m.group(1))
    return names


def rule_exprs(rules: dict) -> list[tuple[str, str]]:
    """(alert name, expr) for every alert rule."""
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"] if "alert" in r]


def concrete(expr: str) -> str:
    """`expr` with Grafana's variables replaced, as Grafana would send it to Prometheus."""
    for var, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown variable in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (a lexical pass, enough for our queries)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)                        # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)                       # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def queried_metric_names() -> dict[str, set[str]]:
    """Metric name -> where it is queried ("alert X", "panel Y", "variable"), over rules and dashboard."""
    where: dict[str, set[str]] = {}
    for alert, expr in rule_exprs(load_rules()):
        for n in metric_names(expr):
            where.setdefault(n, set()).add(f"alert {alert}")
    dashboard = load_dashboard()
    for title, expr in dashboard_exprs(dashboard):
        for n in metric_names(concrete(expr)):
            where.setdefault(n, set()).add(f"panel {title}")
    for n in variable_metric_names(dashboard):
        where.setdefault(n, set()).add("dashboard variable")
    return where
