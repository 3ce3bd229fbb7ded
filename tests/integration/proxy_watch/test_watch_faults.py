"""Upstream faults cost the proxy's watchers no event and cause no duplicate.

A writer puts numbered values on one key, straight to the cluster (failing over itself). Watchers
watch it through `kvproxy`. Midway, the member the proxy is connected to is killed, or the whole
cluster is killed and restarted on its data dirs. Afterwards every watcher's events must be exactly
the key's history (read from the cluster directly): same revisions, same values, same order.
"""

from __future__ import annotations

import asyncio

import grpc

from protos.etcdserverpb import rpc_pb2
from proxy.upstream import Upstream
from tests.support.etcd_ref import start_etcd_cluster
from cluster.launch import port_open

from .harness import WatchClient, metric_value
from .watch_load import Watchers

KEY = b"seq"


class NumberedWriter:
    """Puts KEY = 0, 1, 2, ... one at a time; retries a failed put (which may then appear twice in
    the history: that is a second event, not a duplicate delivery)."""

    def __init__(self, endpoints: str):
        self.upstream = Upstream(endpoints.split(","))
        self.next = 0
        self.last_revision = 0

    async def write(self, count: int, deadline_s: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        goal = self.next + count
        while self.next < goal:
            try:
                r = await self.upstream.kv.Put(rpc_pb2.PutRequest(key=KEY, value=b"%d" % self.next), timeout=2)
                self.last_revision = r.header.revision
                self.next += 1
            except grpc.aio.AioRpcError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def history(endpoint: str, start_revision: int, end_revision: int) -> list[tuple[int, bytes]]:
    """KEY's events in [start_revision, end_revision], watched directly on one member."""
    async with grpc.aio.insecure_channel(endpoint) as ch:
        w = WatchClient(ch)
        w.create(KEY, start_revision=start_revision)
        await w.created()
        out: list[tuple[int, bytes]] = []
        while not out or out[-1][0] < end_revision:
            out.extend((e.kv.mod_revision, e.kv.value) for e in await w.events(1, timeout=20))
        w.close()
        return out


def member_serving_proxy(spec) -> int:
    """Index of the member holding the proxy's watches (the most etcd watchers)."""
    counts = [metric_value(m.metrics_url, "etcd_debugging_mvcc_watcher_total") for m in spec.members]
    return counts.index(max(counts))


async def scenario(spec, proxy, fault) -> None:
    writer = NumberedWriter(spec.endpoints)
    watchers = Watchers(proxy.listen_addr, KEY, connections=2, streams=5)
    try:
        await watchers.open(timeout=30)
        resumes_before = metric_value(proxy.metrics_url, "kvproxy_upstream_watch_resumes_total")
        await writer.write(20)
        first_revision = writer.last_revision - 19
        await fault()
        await writer.write(20)
        await writer.write(5)  # after recovery, for good measure
        final = writer.last_revision
        assert await watchers.wait_events(45, timeout=60), [len(e) for e in watchers.events]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while any(e[-1][0] < final for e in watchers.events) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        alive = [m for m in spec.members if port_open(m.client_port)]
        expected = await history(f"127.0.0.1:{alive[0].client_port}", first_revision, final)
        for events in watchers.events:
            events = [e for e in events if e[0] <= final]
            assert events == expected, _diff(events, expected)
        # The fault really broke the proxy's upstream watch, and it was resumed.
        assert metric_value(proxy.metrics_url, "kvproxy_upstream_watch_resumes_total") > resumes_before
    finally:
        await watchers.close()
        await writer.upstream.close()


def _diff(got, want) -> str:
    g, w = [r for r, _ in got], [r for r, _ in want]
    missing = sorted(set(w) - set(g))
    dup = sorted({r for r in g if g.count(r) > 1})
    return f"missing revisions {missing}, duplicated {dup}, got {len(g)} want {len(w)}"


def test_killing_the_proxys_member_loses_no_event(procs, etcd3, proxy3):
    async def kill_member():
        victim = etcd3.members[member_serving_proxy(etcd3)]
        procs.kill(f"etcd-{victim.name}")

    asyncio.run(scenario(etcd3, proxy3, kill_member))


def test_restarting_the_whole_cluster_loses_no_event(procs, etcd3, proxy3):
    async def restart_all():
        for m in etcd3.members:
            procs.kill(f"etcd-{m.name}")
        await asyncio.sleep(0.5)  # the cluster is down (a fault window, not a wait for a condition)
        await asyncio.to_thread(start_etcd_cluster, procs, etcd3)

    asyncio.run(scenario(etcd3, proxy3, restart_all))
