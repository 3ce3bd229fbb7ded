"""The alert rules and the dashboard against a running stack: one kvcluster member, one kvproxy,
and a real Prometheus (monitoring/config_render.start_prometheus) scraping both every second;
then a real Prometheus on a 3-member cluster.

- every metric name the rules and the dashboard query is on the member's or the proxy's /metrics;
- through Prometheus's HTTP API: etcd_server_has_leader == 1, a non-zero cache hit rate after
  cached reads, a ReadIndex batching factor > 1 under concurrent linearizable reads, every rule
  loaded and evaluated without error, and every dashboard expression accepted;
- on 3 members: each has a leader, exactly one is leader, and a killed member shows as down
  while the others keep their leader.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import grpc
import pytest

from monitoring.config_render import PrometheusProcess, start_prometheus
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.launch import ClusterSpec
from tests.support.kvstack import ProxySpec, start_kv_cluster, start_kvproxy
from cluster.launch import LOOPBACK, ProcessGroup, free_port, wait_until
from tests.unit.monitoring_config.queries import (PROMETHEUS_GENERATED, concrete, dashboard_exprs,
                                                  load_dashboard, queried_metric_names)


# Exposed only by a member that has peers; test_metrics_on_running_tiers.py finds them on 3.
PEERS_ONLY = {"etcd_network_peer_sent_failures_total"}


@dataclass
class Stack:
    cluster: ClusterSpec
    proxy: ProxySpec
    procs: ProcessGroup
    base: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("monitoring_stack"))
    procs = ProcessGroup(os.path.join(base, "logs"))
    try:
        cluster = start_kv_cluster(procs, ClusterSpec.allocate(base, 1))
        proxy = start_kvproxy(procs, cluster)
        yield Stack(cluster, proxy, procs, base)
    finally:
        procs.close()


@pytest.fixture(scope="module")
def prometheus(stack):
    log_path = os.path.join(stack.base, "logs", "prometheus.log")
    with open(log_path, "ab") as log:
        prom = start_prometheus([m.metrics_url for m in stack.cluster.members], [stack.proxy.metrics_url],
                                os.path.join(stack.base, "prometheus"), f"{LOOPBACK}:{free_port()}",
                                scrape_interval="1s", log=log)
    try:
        wait_until(prom.ready, 30, f"prometheus ready\n{_tail(log_path)}", interval=0.2)
        yield prom
    finally:
        prom.stop()


def _tail(path: str, n: int = 2000) -> str:
    with open(path, "rb") as f:
        return f.read()[-n:].decode(errors="replace")


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def _sample_names(metrics_url: str) -> set[str]:
    """Names of the samples on a /metrics page (text format 0.0.4)."""
    names = set()
    for line in _get(metrics_url + "/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def _query(prom: PrometheusProcess, expr: str) -> dict:
    """/api/v1/query; the JSON answer (status "success" or "error")."""
    url = prom.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        return json.loads(_get(url))
    except urllib.error.HTTPError as exc:       # 400/422 carry the error as JSON
        return json.loads(exc.read())


def _values(prom: PrometheusProcess, expr: str) -> list[tuple[dict, float]]:
    answer = _query(prom, expr)
    assert answer["status"] == "success", (expr, answer)
    return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]


def _serializable_reads(proxy: ProxySpec, key: bytes, n: int) -> None:
    with grpc.insecure_channel(proxy.listen_addr) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for _ in range(n):
            kv.Range(rpc_pb2.RangeRequest(key=key, serializable=True), timeout=5)


def test_every_queried_metric_name_exists_on_the_stack(stack):
    """Puts, serializable gets (miss, then hit) and an open watch through the proxy, then both
    /metrics pages must carry every name the alert rules and the dashboard query."""
    stop_watch = threading.Event()

    def watch_requests():
        yield rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"mon/key"))
        stop_watch.wait(30)

    with grpc.insecure_channel(stack.proxy.listen_addr) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        watch = rpc_pb2_grpc.WatchStub(channel).Watch(watch_requests(), timeout=30)
        try:
            assert next(watch).created
            kv.Put(rpc_pb2.PutRequest(key=b"mon/key", value=b"v"), timeout=5)
            assert next(watch).events[0].kv.value == b"v"
            for _ in range(2):
                kv.Range(rpc_pb2.RangeRequest(key=b"mon/key", serializable=True), timeout=5)
            kv.Range(rpc_pb2.RangeRequest(key=b"mon/key"), timeout=5)   # linearizable

            exposed = _sample_names(stack.cluster.members[0].metrics_url) | _sample_names(stack.proxy.metrics_url)
        finally:
            stop_watch.set()
            watch.cancel()

    queried = queried_metric_names()
    missing = {name: sorted(where) for name, where in queried.items()
               if name not in exposed and name not in PROMETHEUS_GENERATED | PEERS_ONLY}
    assert not missing, "queried but exposed by neither tier:\n" + "\n".join(
        f"  {name}: {', '.join(where)}" for name, where in sorted(missing.items()))


def test_prometheus_scrapes_both_tiers_and_evaluates_the_rules(stack, prometheus):
    member_target = f"{LOOPBACK}:{stack.cluster.members[0].metrics_port}"

    # The member has a leader, as Prometheus sees it.
    wait_until(lambda: _values(prometheus, 'etcd_server_has_leader{job="kvcluster"} == 1'), 30,
               "etcd_server_has_leader == 1 in Prometheus", interval=0.25)
    [(labels, _)] = _values(prometheus, 'etcd_server_has_leader{job="kvcluster"}')
    assert labels["instance"] == member_target and labels["tier"] == "member"
    wait_until(lambda: [v for _, v in _values(prometheus, 'up{job="kvproxy"}')] == [1.0], 15,
               "the proxy scraped (up == 1)", interval=0.25)   # targets are scraped independently

    # Cached reads through the proxy: the cache hit rate becomes non-zero.
    with grpc.insecure_channel(stack.proxy.listen_addr) as channel:
        rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=b"mon/hot", value=b"x"), timeout=5)

    def hits_seen() -> bool:
        _serializable_reads(stack.proxy, b"mon/hot", 5)
        return any(v > 0 for _, v in _values(
            prometheus, 'sum(rate(etcd_grpc_proxy_cache_hits_total{job="kvproxy"}[10s]))'))
    wait_until(hits_seen, 30, "a non-zero rate(etcd_grpc_proxy_cache_hits_total)", interval=0.5)

    # The dashboard's hit-ratio panel shows it too.
    hit_ratio = next(e for t, e in dashboard_exprs(load_dashboard()) if t == "Cache hit ratio")
    wait_until(lambda: any(v > 0 for _, v in _values(prometheus, concrete(hit_ratio))), 15,
               "the dashboard's cache hit ratio > 0", interval=0.5)

    # Every alert rule is loaded and evaluates without error on real data (no alert fires).
    def rules_evaluated() -> bool:
        groups = json.loads(_get(prometheus.url + "/api/v1/rules"))["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(groups) == 2 and all(r.get("lastEvaluation", "").startswith("20") and
                                        r["health"] != "unknown" for r in rules)
    wait_until(rules_evaluated, 15, "every rule evaluated", interval=0.5)
    groups = json.loads(_get(prometheus.url + "/api/v1/rules"))["data"]["groups"]
    assert {g["name"] for g in groups} == {"kvcluster", "kvproxy"}
    bad = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert not bad
    firing = [r["name"] for g in groups for r in g["rules"] if r.get("state") == "firing"]
    assert not firing

    # Every dashboard expression is accepted by this Prometheus (no query errors).
    errors = [(title, expr, a.get("error")) for title, expr in dashboard_exprs(load_dashboard())
              if (a := _query(prometheus, concrete(expr)))["status"] != "success"]
    assert not errors


async def _concurrent_linearizable_reads(port: int, concurrency: int, rounds: int) -> None:
    async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for _ in range(rounds):
            await asyncio.gather(*(kv.Range(rpc_pb2.RangeRequest(key=b"mon/hot"), timeout=10)
                                   for _ in range(concurrency)))


def test_prometheus_on_three_members_sees_the_leader_read_batching_and_a_member_down(tmp_path):
    procs = ProcessGroup(str(tmp_path / "logs"))
    prom = None
    try:
        cluster = start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path), 3))
        with open(tmp_path / "logs" / "prometheus.log", "ab") as log:
            prom = start_prometheus([m.metrics_url for m in cluster.members], [],
                                    str(tmp_path / "prometheus"), f"{LOOPBACK}:{free_port()}",
                                    scrape_interval="1s", log=log)
        wait_until(prom.ready, 30, "prometheus ready", interval=0.2)

        def leader_everywhere() -> bool:
            has = _values(prom, 'etcd_server_has_leader{job="kvcluster"} == 1')
            return len(has) == 3 and [v for _, v in _values(prom, 'sum(etcd_server_is_leader{job="kvcluster"})')] == [1.0]
        wait_until(leader_everywhere, 30, "3 members with a leader, one leader", interval=0.25)
        leader_port = {int(l["instance"].rsplit(":", 1)[1]) for l, _ in
                       _values(prom, 'etcd_server_is_leader{job="kvcluster"} == 1')}

        # Concurrent linearizable reads on the leader share ReadIndex rounds (each round waits for
        # a heartbeat quorum): the dashboard's batching factor (reads per round) goes above 1.
        leader = next(m for m in cluster.members if m.metrics_port in leader_port)
        asyncio.run(_concurrent_linearizable_reads(leader.client_port, 64, rounds=5))
        factor = next(e for t, e in dashboard_exprs(load_dashboard()) if t == "ReadIndex batching factor")
        wait_until(lambda: any(v > 1 for _, v in _values(prom, concrete(factor))), 20,
                   "the dashboard's ReadIndex batching factor > 1", interval=0.5)

        # Kill a follower: Prometheus sees it down; the other two keep their leader.
        victim = next(m for m in cluster.members if m.metrics_port not in leader_port)
        procs.kill(f"kv-{victim.name}")
        victim_target = f"{LOOPBACK}:{victim.metrics_port}"
        wait_until(lambda: [l["instance"] for l, _ in _values(prom, 'up{job="kvcluster"} == 0')] == [victim_target],
                   15, "the killed member down in Prometheus", interval=0.25)
        survivors = _values(prom, 'etcd_server_has_leader{job="kvcluster"} == 1 and on (instance) up == 1')
        assert sorted(l["instance"] for l, _ in survivors) == sorted(
            f"{LOOPBACK}:{m.metrics_port}" for m in cluster.members if m is not victim)
        # 2 of 3 up is still a quorum: the insufficient-members expression finds nothing.
        assert _values(prom, 'sum by (job) (up{job="kvcluster"} == bool 1) < '
                             '((count by (job) (up{job="kvcluster"}) + 1) / 2)') == []
    finally:
        if prom is not None:
            prom.stop()
        procs.close()
