"""Watch fan-out through `kvproxy`: 1,000 watchers on one key cost the cluster one watcher."""

from __future__ import annotations

import asyncio

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.launch import wait_until

from .harness import metric_value, start_healthy_kvproxy
from .watch_load import Watchers

ETCD_WATCHERS = "etcd_debugging_mvcc_watcher_total"


def test_thousand_watchers_share_one_upstream_watcher(etcd1, proxy1):
    member = etcd1.members[0]
    # The proxy's own cache-coherence watch is already open; wait until the count settles.
    wait_until(lambda: metric_value(member.metrics_url, ETCD_WATCHERS) >= 1, 10, "the proxy's keyspace watch")
    before = metric_value(member.metrics_url, ETCD_WATCHERS)

    async def run():
        watchers = Watchers(proxy1.listen_addr, b"fan", connections=10, streams=100)
        await watchers.open(timeout=60)
        try:
            during = metric_value(member.metrics_url, ETCD_WATCHERS)
            coalescing = metric_value(proxy1.metrics_url, "etcd_grpc_proxy_watchers_coalescing_total")
            async with grpc.aio.insecure_channel(etcd1.endpoints) as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                revisions = []
                for i in range(5):
                    r = await kv.Put(rpc_pb2.PutRequest(key=b"fan", value=b"v%d" % i))
                    revisions.append(r.header.revision)
            assert await watchers.wait_events(5, timeout=60), \
                f"min events per watcher: {min(len(e) for e in watchers.events)}"
            return during, coalescing, revisions, watchers.events
        finally:
            await watchers.close()

    during, coalescing, revisions, events = asyncio.run(run())
    assert during - before == 1, f"etcd watchers {before} -> {during} for 1,000 proxy watchers"
    assert coalescing == 999
    expected = [(rev, b"v%d" % i) for i, rev in enumerate(revisions)]
    assert all(e == expected for e in events)
    assert metric_value(proxy1.metrics_url, "etcd_grpc_proxy_events_coalescing_total") >= 5 * 999
    # Every client gone: the shared upstream watch is closed too.
    wait_until(lambda: metric_value(member.metrics_url, ETCD_WATCHERS) == before, 10,
               "the shared upstream watch to close")


def test_with_two_workers_the_cluster_sees_at_most_one_watcher_per_worker(procs, etcd1):
    proxy = start_healthy_kvproxy(procs, etcd1, extra_flags=["--workers", "2"])
    member = etcd1.members[0]
    wait_until(lambda: metric_value(member.metrics_url, ETCD_WATCHERS) >= 2, 10, "both workers' keyspace watches")
    before = metric_value(member.metrics_url, ETCD_WATCHERS)

    async def run():
        watchers = Watchers(proxy.listen_addr, b"fan2", connections=20, streams=25)
        await watchers.open(timeout=60)
        try:
            upstream = metric_value(member.metrics_url, ETCD_WATCHERS) - before
            async with grpc.aio.insecure_channel(etcd1.endpoints) as ch:
                await rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"fan2", value=b"v"))
            assert await watchers.wait_events(1, timeout=60)
            return upstream
        finally:
            await watchers.close()

    upstream = asyncio.run(run())
    assert 1 <= upstream <= 2, f"{upstream} upstream watchers for 2 workers"
