"""monitoring/dashboard.json: the structure Grafana needs, and PromQL that Prometheus parses."""

from __future__ import annotations

import json

import pytest
import yaml

from .queries import (DASHBOARD, all_panels, concrete, dashboard_exprs, load_dashboard, metric_names,
                      promtool, queried_metric_names)

# Issue 7's list of what the dashboard covers, by a metric (or expression fragment) that shows it.
COVERS = {
    "leader": "etcd_server_has_leader",
    "leader changes": "etcd_server_leader_changes_seen_total",
    "proposals committed": "etcd_server_proposals_committed_total",
    "proposals applied": "etcd_server_proposals_applied_total",
    "proposals pending": "etcd_server_proposals_pending",
    "proposals failed": "etcd_server_proposals_failed_total",
    "fsync latency": "etcd_disk_wal_fsync_duration_seconds_bucket",
    "commit latency": "etcd_disk_backend_commit_duration_seconds_bucket",
    "db size": "etcd_mvcc_db_total_size_in_bytes",
    "quota": "etcd_server_quota_backend_bytes",
    "RPC rate by method and code": "sum by (grpc_service, grpc_method, grpc_code) (rate(grpc_server_handled_total",
    "ReadIndex batching factor": "rate(etcd_server_linearizable_reads_total{job=~\"$cluster_job\"}[$__rate_interval])) / sum by (instance) (rate(etcd_server_read_indexes_total",
    "proxy hit ratio": "etcd_grpc_proxy_cache_misses_total",
    "coalesced watchers": "etcd_grpc_proxy_watchers_coalescing_total",
    "upstream savings": "kvproxy_upstream_requests_total",
}


@pytest.fixture(scope="module")
def dashboard():
    return load_dashboard()


def test_loads_as_a_grafana_dashboard(dashboard):
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard["id"] is None                     # importable into any Grafana
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"cluster_job", "proxy_job"} <= set(variables)
    with open(DASHBOARD) as f:
        assert json.loads(f.read()) == dashboard


def test_panels_have_unique_ids_and_a_place_on_the_grid(dashboard):
    panels = all_panels(dashboard)
    assert len(panels) >= 20
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    occupied = set()
    for p in panels:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("h", "w", "x", "y")), p["title"]
        assert g["w"] > 0 and g["h"] > 0 and 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"panel {p['title']!r} overlaps another"
        occupied |= cells


def test_every_graph_panel_queries_prometheus(dashboard):
    for p in all_panels(dashboard):
        if p["type"] == "row":
            continue
        assert p["type"] in ("timeseries", "stat"), p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t["datasource"] == p["datasource"], p["title"]


def test_covers_what_the_issue_lists(dashboard):
    exprs = "\n".join(expr for _, expr in dashboard_exprs(dashboard))
    missing = [topic for topic, fragment in COVERS.items() if fragment not in exprs]
    assert not missing


def test_every_expression_parses(dashboard, tmp_path):
    # promtool parses rule expressions: one recording rule per panel target.
    rules = [{"record": f"dashboard:expr_{i}", "expr": concrete(expr)}
             for i, (_, expr) in enumerate(dashboard_exprs(dashboard))]
    path = tmp_path / "dashboard_exprs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_a_bad_expression_would_be_caught(tmp_path):
    path = tmp_path / "bad.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "r", "expr": "sum(rate(etcd_server_read_indexes_total[1m])"}]}]}))
    assert promtool("check", "rules", str(path)).returncode != 0


def test_metric_name_extraction():
    assert metric_names('histogram_quantile(0.99, sum by (instance, le) '
                        '(rate(a_bucket{job=~"x|y", le!="+Inf"}[5m]))) > 0.5') == {"a_bucket"}
    assert metric_names('sum(up{job="k"} == bool 1) without (instance) < (count by (job) (b) + 1) / 2'
                        ) == {"up", "b"}
    assert metric_names("c / on (job, instance) group_left d and ignoring (x) e offset 5m") == {"c", "d", "e"}
    assert metric_names("increase((max by (job) (f))[15m:1m]) >= 4") == {"f"}
    names = queried_metric_names()
    assert "etcd_server_has_leader" in names and "kvproxy_watch_slow_canceled_total" in names
