"""monitoring/alerts.rules.yml: valid, tested by promtool, each alert fully described."""

from __future__ import annotations

import yaml

from .queries import RULE_TESTS, RULES, load_rules, promtool, rule_exprs

# What issue 7 asks for, by the metric each alert must watch.
REQUIRED = {
    "KVClusterNoLeader": "etcd_server_has_leader",
    "KVClusterFrequentLeaderChanges": "etcd_server_leader_changes_seen_total",
    "KVClusterHighFsyncDurations": "etcd_disk_wal_fsync_duration_seconds_bucket",
    "KVClusterHighCommitDurations": "etcd_disk_backend_commit_duration_seconds_bucket",
    "KVClusterHighFailedProposals": "etcd_server_proposals_failed_total",
    "KVClusterDatabaseQuotaLowSpace": "etcd_server_quota_backend_bytes",
    "KVClusterMemberDown": "up",
    "KVClusterInsufficientMembers": "up",
    "KVProxyCacheHitRatioCollapse": "etcd_grpc_proxy_cache_misses_total",
    "KVProxyUpstreamUnreachable": "kvproxy_upstream_connected",
    "KVClusterPeerUnreachable": "etcd_network_peer_sent_failures_total",
    "KVProxySlowWatchersCanceled": "kvproxy_watch_slow_canceled_total",
}


def test_promtool_check_rules_passes():
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_issue_alerts_exist_on_the_right_metrics():
    exprs = dict(rule_exprs(load_rules()))
    for alert, metric in REQUIRED.items():
        assert alert in exprs, alert
        assert metric in exprs[alert], (alert, exprs[alert])


def test_every_alert_has_severity_summary_and_description():
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"].strip(), rule["alert"]
            assert len(rule["annotations"]["description"]) > 40, rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    with open(RULE_TESTS) as f:
        tests = yaml.safe_load(f)["tests"]
    firing, quiet = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {name for name, _ in rule_exprs(load_rules())}
    assert alerts - firing == set(), "alerts without a firing case"
    assert alerts - quiet == set(), "alerts without a non-firing case"
    assert (firing | quiet) - alerts == set(), "tests of alerts that do not exist"
