"""Through `kvproxy`, while a writer keeps writing:
- WatchProgressRequest is answered (etcd's grpc-proxy drops it, etcd#19710) with a revision >= every
  event already received on the stream, and no event at or below it arrives afterwards;
- watchers starting from old revisions (recent ones: from the fanout's history; older ones: from
  the cluster's) catch up and join the shared watch with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from cluster.launch import wait_until

from .harness import WatchClient, metric_value


@contextlib.asynccontextmanager
async def writer(endpoint: str, keys: list[bytes]):
    """Puts to `keys` in turn, as fast as one client can, until the block ends; yields a list whose
    last element is the newest acknowledged revision."""
    revisions = [0]
    stop = asyncio.Event()

    async def loop():
        async with grpc.aio.insecure_channel(endpoint) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            i = 0
            while not stop.is_set():
                r = await kv.Put(rpc_pb2.PutRequest(key=keys[i % len(keys)], value=b"%d" % i))
                revisions.append(r.header.revision)
                i += 1

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield revisions
    finally:
        stop.set()
        await task


def test_progress_answers_are_ordered_with_events(etcd1, proxy1):
    async def run():
        async with grpc.aio.insecure_channel(proxy1.listen_addr) as ch:
            w = WatchClient(ch)
            w.create(b"p/busy", watch_id=1)
            w.create(b"p/quiet", watch_id=2)
            w.create(b"p/", range_end=b"p0", watch_id=3, prev_kv=True)
            for _ in range(3):
                await w.created()
            answers = 0
            highest_event = 0
            floor = 0
            async with writer(etcd1.endpoints, [b"p/busy"] * 9 + [b"p/quiet"]):
                for _ in range(40):
                    w.progress()
                    while True:
                        resp = await w.read(10)
                        for e in resp.events:
                            assert e.kv.mod_revision > floor, \
                                f"event {e.kv.mod_revision} arrived after progress {floor}"
                            highest_event = max(highest_event, e.kv.mod_revision)
                        if resp.watch_id == -1 and not resp.events:
                            assert resp.header.revision >= highest_event
                            floor = resp.header.revision
                            answers += 1
                            break
            w.close()
            return answers, highest_event

    answers, highest = asyncio.run(run())
    assert answers == 40 and highest > 0


def test_watchers_from_old_revisions_join_without_gap_or_duplicate(etcd1, proxy1):
    async def run():
        async with grpc.aio.insecure_channel(proxy1.listen_addr) as ch, \
                grpc.aio.insecure_channel(etcd1.endpoints) as ech:
            kv = rpc_pb2_grpc.KVStub(ech)
            first = (await kv.Put(rpc_pb2.PutRequest(key=b"c", value=b"start"))).header.revision
            live = WatchClient(ch)
            live.create(b"c")                      # the shared watch, ahead of every joiner
            await live.created()
            joiners: list[tuple[int, WatchClient]] = []
            async with writer(etcd1.endpoints, [b"c", b"c", b"unrelated"]) as revisions:
                for round_ in range(6):
                    while revisions[-1] < first + 30 * (round_ + 1):
                        await asyncio.sleep(0.01)
                    # Recent starts are replayed from the fanout's own history; `first` is older
                    # than the fanout, so it is caught up from the cluster.
                    for back in (1, 7, 25, None):
                        start = first if back is None else max(first, revisions[-1] - back)
                        j = WatchClient(ch)
                        j.create(b"c", start_revision=start)
                        joiners.append((start, j))
            final = revisions[-1]
            for tail in range(2):  # every joiner's replay now has an event past its join point
                last_c = (await kv.Put(rpc_pb2.PutRequest(key=b"c", value=b"tail%d" % tail))).header.revision
            await asyncio.to_thread(wait_until, lambda: metric_value(
                proxy1.metrics_url, "kvproxy_upstream_watches", 'kind="catchup"') == 0, 10,
                "every catch-up to join the shared watch and close its temporary upstream watch")
            history = await events_until(live_from(ech, first), last_c)  # from etcd itself
            for start, j in joiners:
                got = await events_until(j, last_c)
                want = [e for e in history if e[0] >= start]
                assert got == want, f"joiner from {start}: {len(got)} events, want {len(want)}"
            live.close()
            return len(joiners), final

    joiners, final = asyncio.run(run())
    assert joiners == 24 and final > 0


def live_from(ch, start: int) -> WatchClient:
    w = WatchClient(ch)
    w.create(b"c", start_revision=start)
    return w


async def events_until(w: WatchClient, last: int) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while not out or out[-1][0] < last:
        resp = await w.read(20)
        assert not resp.canceled, resp
        out.extend((e.kv.mod_revision, e.kv.value) for e in resp.events)
    w.close()
    return out


def test_progress_on_a_stream_without_watchers_answers_the_current_revision(etcd1, proxy1):
    async def run():
        async with grpc.aio.insecure_channel(proxy1.listen_addr) as ch, \
                grpc.aio.insecure_channel(etcd1.endpoints) as ech:
            rev = (await rpc_pb2_grpc.KVStub(ech).Put(rpc_pb2.PutRequest(key=b"x", value=b"1"))).header.revision
            answers = []
            for channel in (ech, ch):
                w = WatchClient(channel)
                w.progress()
                answers.append(await w.read())
                w.close()
            return rev, answers

    rev, (direct, proxied) = asyncio.run(run())
    assert (direct.watch_id, direct.header.revision) == (-1, rev)
    assert (proxied.watch_id, proxied.header.revision, proxied.created, len(proxied.events)) == (-1, rev, False, 0)
