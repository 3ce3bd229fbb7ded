"""The real /metrics of a 3-member kvcluster and of two kvproxies (--workers 1 and --workers 2,
whose supervisor serves the workers' sum), after traffic of every kind (puts, serializable and
linearizable ranges, a txn, a delete, watches, leases with keepalives), directly and through both
proxies:

- `promtool check metrics` finds no problem on any page, while it does find some on etcd
  3.4.23's own /metrics (run beside: etcd's `*_total` gauges such as
  `etcd_server_proposals_committed_total`, whose names we keep and expose untyped, so that
  dashboards and alerts written for etcd work unchanged: docs/metrics.md);
- every metric etcd 3.4.23 has that issue 7 lists is there under etcd's name and type, and every
  name the alert rules and the dashboard query is on some page (the peer metrics included, which
  only a multi-member cluster has);
- the failure signals move: killing a member makes the others count send failures to it
  (`etcd_network_peer_sent_failures_total{To}`); killing the whole cluster takes both proxies'
  `kvproxy_upstream_connected` to 0 (from 1 and 2: one per worker).

The tests run in file order on one module-scoped stack; the last one kills the cluster.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.request
from dataclasses import dataclass

import grpc
import pytest

from cluster.launch import ClusterSpec, ProcessGroup, ProxySpec, wait_until
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.integration.monitoring.scraping import promtool_problems
from tests.support.etcd_ref import start_etcd_cluster
from tests.support.kvstack import start_kv_cluster, start_kvproxy
from tests.unit.monitoring_config.queries import PROMETHEUS_GENERATED, queried_metric_names

# etcd 3.4.23's name and type (as its /metrics declares them; checked against a running one) of
# what issue 7 lists, on each tier; "untyped" where etcd declares a gauge named `*_total` (the one
# deviation: see monitoring/http.py).
MEMBER_TYPES = {
    "grpc_server_started_total": "counter",
    "grpc_server_handled_total": "counter",
    "grpc_server_msg_received_total": "counter",
    "grpc_server_msg_sent_total": "counter",
    "grpc_server_handling_seconds": "histogram",
    "etcd_server_has_leader": "gauge",
    "etcd_server_is_leader": "gauge",
    "etcd_server_leader_changes_seen_total": "counter",
    "etcd_server_proposals_committed_total": "untyped",
    "etcd_server_proposals_applied_total": "untyped",
    "etcd_server_proposals_pending": "gauge",
    "etcd_server_proposals_failed_total": "counter",
    "etcd_server_quota_backend_bytes": "gauge",
    "etcd_disk_wal_fsync_duration_seconds": "histogram",
    "etcd_disk_backend_commit_duration_seconds": "histogram",
    "etcd_mvcc_db_total_size_in_bytes": "gauge",
    "etcd_mvcc_db_total_size_in_use_in_bytes": "gauge",
    "etcd_mvcc_put_total": "counter",
    "etcd_mvcc_range_total": "counter",
    "etcd_mvcc_txn_total": "counter",
    "etcd_mvcc_delete_total": "counter",
    "etcd_debugging_mvcc_keys_total": "untyped",
    "etcd_debugging_mvcc_watcher_total": "untyped",
    "etcd_network_client_grpc_received_bytes_total": "counter",
    "etcd_network_client_grpc_sent_bytes_total": "counter",
    "etcd_network_peer_sent_bytes_total": "counter",
    "etcd_network_peer_received_bytes_total": "counter",
    "etcd_network_peer_round_trip_time_seconds": "histogram",
    "etcd_network_peer_sent_failures_total": "counter",
    # etcd: counter without `_total`, which prometheus_client cannot write (docs/metrics.md)
    "etcd_server_health_success": "untyped",
    "etcd_server_health_failures": "untyped",
    # beyond issue 7's list: what etcd 3.4.23 also exposes and has a meaning here
    "etcd_server_version": "gauge",
    "etcd_cluster_version": "gauge",
    "etcd_server_id": "gauge",
    "etcd_server_is_learner": "gauge",
    "etcd_debugging_mvcc_current_revision": "gauge",
    "etcd_debugging_mvcc_compact_revision": "gauge",
    "etcd_debugging_server_lease_expired_total": "counter",
    "etcd_network_active_peers": "gauge",
    "os_fd_used": "gauge",
    "os_fd_limit": "gauge",
    "etcd_server_slow_apply_total": "counter",
    "etcd_server_slow_read_indexes_total": "counter",
    "etcd_server_read_indexes_failed_total": "counter",
    "etcd_server_heartbeat_send_failures_total": "counter",
    "etcd_server_snapshot_apply_in_progress_total": "untyped",  # etcd: a gauge named *_total
    "etcd_server_learner_promote_successes": "untyped",  # etcd: a counter without _total
    "etcd_disk_wal_write_bytes_total": "untyped",  # etcd: a gauge named *_total
    "etcd_disk_backend_defrag_duration_seconds": "histogram",
    "etcd_disk_defrag_inflight": "gauge",
    "etcd_disk_backend_snapshot_duration_seconds": "histogram",
    "etcd_mvcc_hash_duration_seconds": "histogram",
    "etcd_mvcc_hash_rev_duration_seconds": "histogram",
    "etcd_debugging_mvcc_put_total": "counter",
    "etcd_debugging_mvcc_range_total": "counter",
    "etcd_debugging_mvcc_txn_total": "counter",
    "etcd_debugging_mvcc_delete_total": "counter",
    "etcd_debugging_mvcc_db_total_size_in_bytes": "gauge",
    "etcd_debugging_auth_revision": "gauge",
}
PROXY_TYPES = {
    "grpc_server_started_total": "counter",
    "grpc_server_handled_total": "counter",
    "grpc_server_handling_seconds": "histogram",
    "etcd_network_client_grpc_received_bytes_total": "counter",
    "etcd_network_client_grpc_sent_bytes_total": "counter",
    # etcd 3.4's grpc-proxy types the hit and miss counts as gauges; ours are counters (they are)
    "etcd_grpc_proxy_cache_hits_total": "counter",
    "etcd_grpc_proxy_cache_misses_total": "counter",
    "etcd_grpc_proxy_cache_keys_total": "untyped",
    "etcd_grpc_proxy_watchers_coalescing_total": "untyped",
    "etcd_grpc_proxy_events_coalescing_total": "counter",
    "kvproxy_upstream_connected": "gauge",
    "kvproxy_cache_coherent": "gauge",
}
# Timed from heartbeat to heartbeat response: only the leader sends heartbeats (as in etcd, where
# a follower's histogram comes from its probes; ours has none).
LEADER_ONLY = {"etcd_network_peer_round_trip_time_seconds"}


@dataclass
class Stack:
    cluster: ClusterSpec
    proxies: dict[int, ProxySpec]  # --workers -> proxy
    etcd: ClusterSpec               # a one-member etcd 3.4.23, for what promtool says about it
    procs: ProcessGroup


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("metrics_tiers"))
    procs = ProcessGroup(os.path.join(base, "logs"))
    try:
        cluster = start_kv_cluster(procs, ClusterSpec.allocate(base, 3))
        proxies = {n: start_kvproxy(procs, cluster, name=f"kvproxy-w{n}", extra_flags=["--workers", str(n)])
                   for n in (1, 2)}
        etcd = start_etcd_cluster(procs, ClusterSpec.allocate(os.path.join(base, "etcd"), 1))
        yield Stack(cluster, proxies, etcd, procs)
    finally:
        procs.close()


def _page(metrics_url: str) -> str:
    with urllib.request.urlopen(metrics_url + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def _types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def _sample_names(text: str) -> set[str]:
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def _value(text: str, sample: str) -> float | None:
    """The value of the sample written exactly `sample` (name and labels as exposed)."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _traffic(target: str, prefix: bytes) -> None:
    """Every kind of call on `target`: KV, a watch that sees an event, a lease kept alive."""
    stop_watch = threading.Event()

    def watch_requests():
        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=prefix + b"w"))
        stop_watch.wait(30)

    with grpc.insecure_channel(target) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        lease = rpc_pb2_grpc.LeaseStub(channel)
        watch = rpc_pb2_grpc.WatchStub(channel).Watch(watch_requests(), timeout=30)
        try:
            assert next(watch).created
            granted = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=10)
            kv.Put(rpc_pb2.PutRequest(key=prefix + b"w", value=b"v", lease=granted.ID), timeout=10)
            assert next(watch).events[0].kv.value == b"v"
            keepalive = next(lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID)]), timeout=10))
            assert keepalive.TTL > 0
            for i in range(5):
                kv.Put(rpc_pb2.PutRequest(key=prefix + b"k%d" % i, value=b"x" * 100), timeout=10)
                kv.Range(rpc_pb2.RangeRequest(key=prefix + b"k%d" % i, serializable=True), timeout=10)
                kv.Range(rpc_pb2.RangeRequest(key=prefix + b"k%d" % i, serializable=True), timeout=10)
                kv.Range(rpc_pb2.RangeRequest(key=prefix + b"k%d" % i), timeout=10)
            kv.Txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                key=prefix + b"t", value=b"t"))]), timeout=10)
            kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=prefix + b"k0"), timeout=10)
            lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=granted.ID), timeout=10)
        finally:
            stop_watch.set()
            watch.cancel()


@pytest.fixture(scope="module")
def pages(stack) -> dict[str, str]:
    """Each tier's /metrics after traffic on every member and through both proxies."""
    for m in stack.cluster.members:
        _traffic(f"127.0.0.1:{m.client_port}", f"direct/{m.name}/".encode())
    for n, proxy in stack.proxies.items():
        for i in range(3 * n):  # new channels: the supervisor's SO_REUSEPORT spreads them over workers
            _traffic(proxy.listen_addr, f"proxy{n}/{i}/".encode())
    urls = {**{f"member {m.name}": m.metrics_url for m in stack.cluster.members},
            **{f"proxy --workers {n}": p.metrics_url for n, p in stack.proxies.items()}}
    wait_until(lambda: any("etcd_network_peer_round_trip_time_seconds_count" in _page(m.metrics_url)
                           for m in stack.cluster.members), 15, "a peer round trip timed on the leader")
    return {what: _page(url) for what, url in urls.items()}


def test_promtool_finds_no_problem_on_any_tier(stack, pages):
    etcd = stack.etcd.members[0]
    _traffic(f"127.0.0.1:{etcd.client_port}", b"etcd/")
    etcds_own = set(promtool_problems(_page(etcd.metrics_url)).splitlines())
    assert 'etcd_server_proposals_committed_total non-counter metrics should not have "_total" suffix' in etcds_own
    problems = {what: promtool_problems(text).splitlines() for what, text in pages.items()}
    assert problems == {what: [] for what in pages}


def test_etcd_names_and_types_on_every_tier(pages):
    leader_only_seen = set()
    for what, text in pages.items():
        expected = MEMBER_TYPES if what.startswith("member") else PROXY_TYPES
        types = _types(text)
        leader_only_seen |= LEADER_ONLY & types.keys()
        wrong = {name: (types.get(name), kind) for name, kind in expected.items()
                 if types.get(name) != kind and not (name in LEADER_ONLY and name not in types)}
        assert not wrong, f"{what}: name -> (exposed type, etcd's type): {wrong}"
    assert leader_only_seen == LEADER_ONLY


def test_traffic_is_counted_in_bytes_on_both_tiers(pages):
    for what, text in pages.items():
        assert _value(text, "etcd_network_client_grpc_received_bytes_total") > 0, what
        assert _value(text, "etcd_network_client_grpc_sent_bytes_total") > 0, what


def test_identity_revisions_peers_and_descriptors_read_as_etcds(stack, pages):
    """The values of the identity and level gauges etcd 3.4.23 also exposes (its own page, read
    beside, has the same series under the same labels)."""
    ids = {}
    for m in stack.cluster.members:
        with grpc.insecure_channel(f"127.0.0.1:{m.client_port}") as channel:
            status = rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest(), timeout=10)
        ids[m.name] = status.header.member_id
    for m in stack.cluster.members:
        text = pages[f"member {m.name}"]
        assert _value(text, 'etcd_server_version{server_version="3.4.0"}') == 1
        assert _value(text, 'etcd_cluster_version{cluster_version="3.4"}') == 1
        assert _value(text, f'etcd_server_id{{server_id="{ids[m.name]:x}"}}') == 1
        assert _value(text, "etcd_server_is_learner") == 0
        assert _value(text, "etcd_debugging_mvcc_current_revision") > 1
        assert _value(text, "etcd_debugging_mvcc_compact_revision") == -1  # never compacted
        for other in stack.cluster.members:
            if other is not m:  # in touch with both peers
                assert _value(text, f'etcd_network_active_peers{{Local="{ids[m.name]:x}",Remote="{ids[other.name]:x}"}}') == 1
        assert 0 < _value(text, "os_fd_used") <= _value(text, "os_fd_limit")
    etcd_page = _page(stack.etcd.members[0].metrics_url)  # one member: no peers to list
    for name in ("etcd_server_version{", "etcd_cluster_version{", "etcd_server_id{",
                 "etcd_debugging_mvcc_compact_revision -1", "os_fd_used "):
        assert name in etcd_page, name


def test_maintenance_lease_and_wal_figures_as_etcds(stack, pages):
    """The timings and counts etcd 3.4.23 also keeps, driven the same way on one of our members
    and on the reference etcd: Defragment, Hash, HashKV and Snapshot each observed once, WAL
    bytes written, the older etcd_debugging_* names equal to the current ones."""
    ours, etcd = stack.cluster.members[0], stack.etcd.members[0]
    for m in (ours, etcd):
        before = _page(m.metrics_url)
        with grpc.insecure_channel(f"127.0.0.1:{m.client_port}") as channel:
            maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
            maintenance.Defragment(rpc_pb2.DefragmentRequest(), timeout=30)
            maintenance.Hash(rpc_pb2.HashRequest(), timeout=30)
            maintenance.HashKV(rpc_pb2.HashKVRequest(), timeout=30)
            assert sum(1 for _ in maintenance.Snapshot(rpc_pb2.SnapshotRequest(), timeout=30)) > 1
        after = _page(m.metrics_url)
        for name in ("etcd_disk_backend_defrag_duration_seconds", "etcd_mvcc_hash_duration_seconds",
                     "etcd_mvcc_hash_rev_duration_seconds", "etcd_disk_backend_snapshot_duration_seconds"):
            assert (_value(after, name + "_count") or 0) == (_value(before, name + "_count") or 0) + 1, (m, name)
        assert _value(after, "etcd_disk_defrag_inflight") == 0
        assert _value(after, "etcd_disk_wal_write_bytes_total") > 0, m
        assert _value(after, "etcd_server_snapshot_apply_in_progress_total") == 0, m
        for name in ("put", "range", "txn", "delete"):
            assert _value(after, f"etcd_debugging_mvcc_{name}_total") == _value(after, f"etcd_mvcc_{name}_total"), (m, name)
        assert _value(after, "etcd_debugging_mvcc_db_total_size_in_bytes") == _value(after, "etcd_mvcc_db_total_size_in_bytes")
        for name in ("etcd_server_slow_read_indexes_total", "etcd_server_read_indexes_failed_total",
                     "etcd_server_heartbeat_send_failures_total", "etcd_server_slow_apply_total",
                     "etcd_server_learner_promote_successes"):
            assert _value(after, name) is not None, (m, name)  # present from the start, as etcd's
    etcd_types = _types(_page(etcd.metrics_url))
    assert etcd_types.keys() >= {name for name in MEMBER_TYPES if MEMBER_TYPES[name] != "untyped"
                                 and name.startswith(("etcd_disk_", "etcd_mvcc_hash", "etcd_debugging_mvcc_",
                                                      "etcd_server_slow", "etcd_server_read_indexes_failed",
                                                      "etcd_server_heartbeat", "etcd_debugging_auth"))}


def test_an_expired_lease_is_counted_by_the_leader(stack):
    def expired_total() -> float:
        return sum(_value(_page(m.metrics_url), "etcd_debugging_server_lease_expired_total") or 0
                   for m in stack.cluster.members)

    before = expired_total()
    with grpc.insecure_channel(f"127.0.0.1:{stack.cluster.members[0].client_port}") as channel:
        rpc_pb2_grpc.LeaseStub(channel).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=2), timeout=10)
    wait_until(lambda: expired_total() == before + 1, 30, "the expired lease counted once")


def test_every_name_the_rules_and_dashboard_query_is_exposed(pages):
    exposed = set().union(*(_sample_names(text) for text in pages.values()))
    missing = {name: sorted(where) for name, where in queried_metric_names().items()
               if name not in exposed and name not in PROMETHEUS_GENERATED}
    assert not missing, missing


def test_send_failures_to_a_dead_member_and_a_proxy_without_upstream(stack, pages):
    for n, proxy in stack.proxies.items():   # one per worker connected
        assert _value(_page(proxy.metrics_url), "kvproxy_upstream_connected") == n

    # Kill a follower: the leader's heartbeats (at least) to it keep failing. (A follower sends
    # to the leader only, so the other follower has nothing to count, in etcd as here.)
    leader = next(m for m in stack.cluster.members if _value(_page(m.metrics_url), "etcd_server_is_leader") == 1)
    victim = next(m for m in stack.cluster.members if m is not leader)
    survivors = [m for m in stack.cluster.members if m is not victim]
    with grpc.insecure_channel(f"127.0.0.1:{leader.client_port}") as channel:
        members = rpc_pb2_grpc.ClusterStub(channel).MemberList(rpc_pb2.MemberListRequest(), timeout=10).members
    hex_ids = {m.name: f"{m.ID:x}" for m in members}
    victim_id = hex_ids[victim.name]
    failures = f'etcd_network_peer_sent_failures_total{{To="{victim_id}"}}'

    def failures_to_victim() -> float:   # summed: whichever survivor leads sends heartbeats
        return sum(_value(_page(m.metrics_url), failures) for m in survivors)
    before = failures_to_victim()        # every peer's series exists (at 0) from the start
    stack.procs.kill(f"kv-{victim.name}")
    wait_until(lambda: failures_to_victim() >= before + 5, 30,
               f"send failures to {victim.name} counted by the leader", interval=0.5)
    for m in survivors:  # both see their connection to it down, the follower too
        active = f'etcd_network_active_peers{{Local="{hex_ids[m.name]}",Remote="{victim_id}"}}'
        wait_until(lambda m=m, active=active: _value(_page(m.metrics_url), active) == 0, 30,
                   f"{m.name} no longer counts {victim.name} as an active peer", interval=0.5)

    for m in survivors:
        stack.procs.kill(f"kv-{m.name}")
    for n, proxy in stack.proxies.items():
        wait_until(lambda proxy=proxy: _value(_page(proxy.metrics_url), "kvproxy_upstream_connected") == 0, 30,
                   f"kvproxy_upstream_connected == 0 on the proxy with {n} workers", interval=0.5)
