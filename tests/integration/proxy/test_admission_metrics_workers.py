"""Hot-key admission limits, the metrics/health endpoints, and --workers N, against etcd 3.4.23."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import grpc

from protos.etcdserverpb import rpc_pb2
from tests.support.kvstack import start_kvproxy
from cluster.launch import wait_until

from .conftest import kv_stub, metric, put, scrape


def test_per_key_limit_refuses_the_hot_key_only(procs, etcd1):
    proxy = start_kvproxy(procs, etcd1, extra_flags=["--max-requests-per-key-per-second", "20"])
    put(etcd1.members[0].client_port, b"hot", b"v")
    channel, kv = kv_stub(proxy.port)
    with channel:
        hot = rpc_pb2.RangeRequest(key=b"hot", serializable=True)
        refused = None
        for _ in range(200):  # far more than 20/s can take
            try:
                kv.Range(hot, timeout=5)
            except grpc.RpcError as e:
                refused = e
                break
        assert refused is not None, "200 back-to-back reads of one key were all admitted"
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.details() == "etcdserver: too many requests"
        why = dict(refused.trailing_metadata())["kvproxy-admission"]
        assert "b'hot'" in why and "--max-requests-per-key-per-second=20" in why
        for i in range(5):  # another key is not limited by the hot one
            kv.Range(rpc_pb2.RangeRequest(key=b"cold%d" % i, serializable=True), timeout=5)
        # The bucket refills: the hot key is admitted again.
        wait_until(lambda: _admitted(kv, hot), 5, "hot key admitted again")
    assert metric(proxy.metrics_url, "kvproxy_admission_rejected_total", limit="key") >= 1


def _admitted(kv, req) -> bool:
    try:
        kv.Range(req, timeout=5)
        return True
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        return False


def test_per_client_limit_counts_every_connection_of_a_client(procs, etcd1):
    proxy = start_kvproxy(procs, etcd1, extra_flags=["--max-requests-per-client-per-second", "30"])
    channels = [kv_stub(proxy.port) for _ in range(3)]  # three connections, one client address
    codes = []
    for i in range(150):
        ch, kv = channels[i % 3]
        try:
            kv.Range(rpc_pb2.RangeRequest(key=b"k%d" % i, serializable=True), timeout=5)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
    for ch, _ in channels:
        ch.close()
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.OK) < 100
    assert metric(proxy.metrics_url, "kvproxy_admission_rejected_total", limit="client") >= 50


def test_limits_are_off_by_default(proxy1):
    channel, kv = kv_stub(proxy1.port)
    with channel:
        for _ in range(300):
            kv.Range(rpc_pb2.RangeRequest(key=b"x", serializable=True), timeout=5)
    assert metric(proxy1.metrics_url, "kvproxy_admission_rejected_total") == 0


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_metrics_count_and_health_follows_upstream(procs, etcd1):
    proxy = start_kvproxy(procs, etcd1)
    url = proxy.metrics_url
    wait_until(lambda: metric(url, "kvproxy_cache_coherent") == 1, 10, "cache watch")
    put(etcd1.members[0].client_port, b"m", b"v")
    samples = scrape(url)
    assert ("etcd_grpc_proxy_cache_keys_total", ()) in samples
    channel, kv = kv_stub(proxy.port)
    with channel:
        for _ in range(5):
            kv.Range(rpc_pb2.RangeRequest(key=b"m", serializable=True), timeout=5)
        kv.Range(rpc_pb2.RangeRequest(key=b"m"), timeout=5)
    assert metric(url, "etcd_grpc_proxy_cache_misses_total") == 1
    assert metric(url, "etcd_grpc_proxy_cache_hits_total") == 4
    assert metric(url, "etcd_grpc_proxy_cache_keys_total") == 1
    assert metric(url, "kvproxy_upstream_requests_total", method="Range") == 2
    assert metric(url, "grpc_server_handled_total", grpc_method="Range", grpc_code="OK") == 6
    with urllib.request.urlopen(url + "/metrics") as r:
        text = r.read().decode()
    assert "# TYPE etcd_grpc_proxy_cache_hits_total counter" in text
    assert "# TYPE etcd_grpc_proxy_cache_keys_total untyped" in text  # etcd: a gauge named _total
    assert _get(url + "/health") == (200, b'{"health":"true"}')
    assert _get(url + "/proxy/health") == (200, b'{"health":"true"}')

    procs.kill("etcd-m1")
    wait_until(lambda: _get(url + "/health")[0] == 503, 10, "/health to report the cluster gone")
    assert _get(url + "/health")[1] == b'{"health":"false"}\n'


def test_two_workers_share_the_port_and_aggregate_metrics(procs, etcd1):
    proxy = start_kvproxy(procs, etcd1, extra_flags=["--workers", "2"])
    url = proxy.metrics_url
    # Both workers up, each with its cache's keyspace watch established (the gauge is summed).
    wait_until(lambda: metric(url, "kvproxy_cache_coherent") == 2, 20, "two coherent workers")
    put(etcd1.members[0].client_port, b"w", b"v")
    req = rpc_pb2.RangeRequest(key=b"w", serializable=True)
    # Many connections: the kernel spreads them over both workers, each with its own cache.
    for _ in range(30):
        channel, kv = kv_stub(proxy.port)
        with channel:
            assert kv.Range(req, timeout=5).kvs[0].value == b"v"
            kv.Range(req, timeout=5)
    hits = metric(url, "etcd_grpc_proxy_cache_hits_total")
    misses = metric(url, "etcd_grpc_proxy_cache_misses_total")
    assert hits + misses == 60          # every worker's counts, summed, none lost
    assert misses == 2                  # one miss per worker: both served connections
    assert metric(url, "etcd_grpc_proxy_cache_keys_total") == 2
    assert metric(url, "grpc_server_handled_total", grpc_method="Range", grpc_code="OK") == 60
    assert _get(url + "/health") == (200, b'{"health":"true"}')
    assert _get(url + "/proxy/health") == (200, b'{"health":"true"}')
    # cluster/cpu_policy.py: the supervisor runs under SCHED_BATCH and its workers inherit it
    supervisor = procs.procs["kvproxy"].pid
    with open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
        workers = [int(pid) for pid in f.read().split()]
    assert len(workers) == 2
    assert {os.sched_getscheduler(pid) for pid in [supervisor, *workers]} == {os.SCHED_BATCH}
