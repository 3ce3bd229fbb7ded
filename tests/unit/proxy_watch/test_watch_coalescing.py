"""Watch coalescing logic against a scripted upstream (no network): resume after a broken upstream
stream with no gap and no duplicate, compaction found while resuming, fragment reassembly,
catch-up join, the slow-client cut-off, and sharing one upstream watch."""

from __future__ import annotations

import asyncio

import grpc

from protos.etcdserverpb import rpc_pb2
from protos.mvccpb import kv_pb2
from proxy.coalesce.watch_client import ClientWatchStream
from proxy.coalesce.watch_coalescer import WatchCoalescer
from proxy.namespace import Namespace


class FakeCall:
    """One upstream Watch RPC: records what the proxy writes, replays what the test scripts."""

    def __init__(self):
        self.requests: list[rpc_pb2.WatchRequest] = []
        self.responses: asyncio.Queue = asyncio.Queue()

    async def write(self, req):
        self.requests.append(req)

    async def read(self):
        item = await self.responses.get()
        if isinstance(item, Exception):
            raise item
        return item

    def cancel(self):
        pass

    def creates(self) -> list[rpc_pb2.WatchCreateRequest]:
        return [r.create_request for r in self.requests if r.HasField("create_request")]


class FakeUpstream:
    def __init__(self):
        self.calls: list[FakeCall] = []
        self.watch = self

    def Watch(self, metadata=None):  # the WatchStub method
        self.calls.append(FakeCall())
        return self.calls[-1]


def header(rev: int) -> rpc_pb2.ResponseHeader:
    return rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=rev, raft_term=1)


def put(rev: int) -> kv_pb2.Event:
    return kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv_pb2.KeyValue(key=b"k", value=b"%d" % rev, mod_revision=rev),
                        prev_kv=kv_pb2.KeyValue(key=b"k", value=b"%d" % (rev - 1)))


def events(watch_id: int, *revs: int, fragment: bool = False) -> rpc_pb2.WatchResponse:
    return rpc_pb2.WatchResponse(header=header(max(revs)), watch_id=watch_id, events=[put(r) for r in revs],
                                 fragment=fragment)


def created(watch_id: int, rev: int) -> rpc_pb2.WatchResponse:
    return rpc_pb2.WatchResponse(header=header(rev), watch_id=watch_id, created=True)


async def until(condition, what: str, steps: int = 2000) -> None:
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


def sent(stream: ClientWatchStream) -> list[rpc_pb2.WatchResponse]:
    """Take everything queued for the client (as the send loop would)."""
    out = [rpc_pb2.WatchResponse.FromString(b) for b in stream._queue]
    stream._queue.clear()
    return out


def revisions(responses) -> list[int]:
    return [e.kv.mod_revision for r in responses for e in r.events]


def create(stream: ClientWatchStream, **kw) -> None:
    stream.handle(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k", **kw)))


async def setup(**client_options):
    upstream = FakeUpstream()
    coalescer = WatchCoalescer(upstream, Namespace(b""))
    client = ClientWatchStream(coalescer, (), Namespace(b""), **client_options)
    return upstream, coalescer, client


def test_shared_watch_resumes_from_next_revision_without_gap_or_duplicate():
    async def run():
        upstream, coalescer, client = await setup()
        other = ClientWatchStream(coalescer, (), Namespace(b""))
        create(client, prev_kv=True)
        create(other)
        await until(lambda: upstream.calls and upstream.calls[0].creates(), "upstream create")
        assert len(upstream.calls[0].creates()) == 1, "two clients, one upstream watch"
        uid = upstream.calls[0].creates()[0].watch_id
        assert upstream.calls[0].creates()[0].prev_kv, "the shared watch always asks prev_kv"
        upstream.calls[0].responses.put_nowait(created(uid, 10))
        upstream.calls[0].responses.put_nowait(events(uid, 11))
        upstream.calls[0].responses.put_nowait(events(uid, 12))
        await until(lambda: revisions(client._queue and [rpc_pb2.WatchResponse.FromString(b) for b in client._queue]) == [11, 12], "11, 12")
        upstream.calls[0].responses.put_nowait(grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "member died"))
        await until(lambda: len(upstream.calls) == 2 and upstream.calls[1].creates(), "re-created upstream")
        resumed = upstream.calls[1].creates()[0]
        assert resumed.start_revision == 13 and resumed.watch_id == uid
        upstream.calls[1].responses.put_nowait(created(uid, 14))
        upstream.calls[1].responses.put_nowait(events(uid, 12, 13))   # 12 again: must be dropped
        upstream.calls[1].responses.put_nowait(events(uid, 14))
        await until(lambda: len(client._queue) >= 4, "resumed events")
        got = sent(client)
        assert [r.created for r in got] == [True, False, False, False, False]
        assert revisions(got) == [11, 12, 13, 14]
        assert all(e.HasField("prev_kv") for r in got for e in r.events)
        other_got = sent(other)
        assert revisions(other_got) == [11, 12, 13, 14]
        assert not any(e.HasField("prev_kv") for r in other_got for e in r.events)
        client.close()
        other.close()
        await coalescer.close()

    asyncio.run(run())


def test_compaction_found_while_resuming_cancels_watchers_with_compact_revision():
    async def run():
        upstream, coalescer, client = await setup()
        create(client, watch_id=3)
        await until(lambda: upstream.calls and upstream.calls[0].creates(), "upstream create")
        uid = upstream.calls[0].creates()[0].watch_id
        upstream.calls[0].responses.put_nowait(created(uid, 10))
        upstream.calls[0].responses.put_nowait(grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone"))
        await until(lambda: len(upstream.calls) == 2 and upstream.calls[1].creates(), "re-created upstream")
        upstream.calls[1].responses.put_nowait(created(uid, 30))
        upstream.calls[1].responses.put_nowait(rpc_pb2.WatchResponse(
            header=rpc_pb2.ResponseHeader(cluster_id=1), watch_id=uid, canceled=True, compact_revision=25))
        await until(lambda: len(client._queue) == 2, "the cancel")
        got = sent(client)
        assert got[1].canceled and got[1].compact_revision == 25 and got[1].watch_id == 3
        assert not client.watchers
        await until(lambda: not coalescer._streams, "the idle upstream stream to close")
        await coalescer.close()

    asyncio.run(run())


def test_fragments_are_reassembled_then_refragmented_per_client():
    async def run():
        upstream, coalescer, client = await setup()
        create(client)
        await until(lambda: upstream.calls and upstream.calls[0].creates(), "upstream create")
        uid = upstream.calls[0].creates()[0].watch_id
        call = upstream.calls[0]
        call.responses.put_nowait(created(uid, 10))
        call.responses.put_nowait(events(uid, 11, fragment=True))
        call.responses.put_nowait(events(uid, 11, fragment=True))
        call.responses.put_nowait(events(uid, 11))
        await until(lambda: len(client._queue) == 2, "one reassembled response")
        got = sent(client)
        assert len(got[1].events) == 3 and not got[1].fragment
        client.close()
        await coalescer.close()

    asyncio.run(run())


def test_catch_up_joins_the_live_broadcast_without_gap_or_duplicate():
    async def run():
        upstream, coalescer, live = await setup()
        create(live)
        await until(lambda: upstream.calls and upstream.calls[0].creates(), "upstream create")
        call = upstream.calls[0]
        shared = call.creates()[0].watch_id
        call.responses.put_nowait(created(shared, 10))
        await until(lambda: live._queue, "live created")
        joiner = ClientWatchStream(coalescer, (), Namespace(b""))
        create(joiner, start_revision=6)
        await until(lambda: len(call.creates()) == 2, "temporary catch-up watch")
        temp = call.creates()[1]
        assert temp.start_revision == 6
        call.responses.put_nowait(created(temp.watch_id, 10))
        call.responses.put_nowait(events(temp.watch_id, 6, 8))       # history below the join point
        call.responses.put_nowait(events(shared, 11))                # live, buffered for the joiner
        call.responses.put_nowait(events(shared, 12))
        call.responses.put_nowait(events(temp.watch_id, 9, 10, 11))  # replay reaches the join point
        call.responses.put_nowait(events(shared, 13))
        await until(lambda: revisions(rpc_pb2.WatchResponse.FromString(b) for b in joiner._queue)[-1:] == [13],
                    "the joiner to reach 13")
        assert revisions(sent(joiner)) == [6, 8, 9, 10, 11, 12, 13]
        assert revisions(sent(live)) == [11, 12, 13]
        assert any(r.HasField("cancel_request") and r.cancel_request.watch_id == temp.watch_id
                   for r in call.requests), "the temporary upstream watch is closed after the join"
        live.close()
        joiner.close()
        await coalescer.close()

    asyncio.run(run())


def test_slow_client_is_canceled_and_the_other_keeps_receiving():
    async def run():
        upstream, coalescer, slow = await setup(send_queue_limit=4)
        fast = ClientWatchStream(coalescer, (), Namespace(b""))
        create(slow)
        create(fast)
        await until(lambda: upstream.calls and upstream.calls[0].creates(), "upstream create")
        call = upstream.calls[0]
        uid = call.creates()[0].watch_id
        call.responses.put_nowait(created(uid, 10))
        for rev in range(11, 21):
            call.responses.put_nowait(events(uid, rev))
        got = []

        def fast_drained():
            got.extend(sent(fast))
            return revisions(got)[-1:] == [20]

        await until(fast_drained, "the fast client to get 20")
        assert revisions(got) == list(range(11, 21))
        slow_got = sent(slow)
        assert slow_got[-1].canceled and "too slow" in slow_got[-1].cancel_reason
        assert revisions(slow_got) == [11, 12, 13], "no event after the cut-off, none out of order"
        assert not slow.watchers
        fast.close()
        slow.close()
        await coalescer.close()

    asyncio.run(run())


def test_progress_notify_reports_the_fanout_position_to_idle_watchers_only():
    async def run():
        upstream, coalescer, client = await setup(progress_interval=0.05)
        create(client, watch_id=1, progress_notify=True)
        create(client, watch_id=2)
        await until(lambda: upstream.calls and upstream.calls[0].creates(), "upstream create")
        call = upstream.calls[0]
        uid = call.creates()[0].watch_id
        call.responses.put_nowait(created(uid, 10))
        call.responses.put_nowait(events(uid, 11))
        got = []

        def notified():
            got.extend(sent(client))
            return any(not r.events and not r.created and r.watch_id == 1 for r in got)

        await until(notified, "a progress notification")
        [note] = [r for r in got if not r.events and not r.created]
        assert note.header.revision == 11
        assert all(r.watch_id != 2 or r.created or r.events for r in got), "2 did not ask"
        client.close()
        await coalescer.close()

    asyncio.run(run())


def test_a_recent_start_is_replayed_from_the_fanout_history_without_an_upstream_watch():
    async def run():
        upstream, coalescer, live = await setup()
        create(live)
        await until(lambda: upstream.calls and upstream.calls[0].creates(), "upstream create")
        call = upstream.calls[0]
        uid = call.creates()[0].watch_id
        call.responses.put_nowait(created(uid, 10))
        for rev in (11, 12, 13):
            call.responses.put_nowait(events(uid, rev))
        await until(lambda: len(live._queue) == 4, "live events")
        joiner = ClientWatchStream(coalescer, (), Namespace(b""))
        create(joiner, start_revision=12)          # quiet key: nothing new will come to help
        got = sent(joiner)
        assert got[0].created and got[0].header.revision == 13
        assert revisions(got) == [12, 13]
        assert len(call.creates()) == 1, "no temporary upstream watch"
        call.responses.put_nowait(events(uid, 14))
        await until(lambda: joiner._queue, "the joiner to get 14")
        assert revisions(sent(joiner)) == [14]
        live.close()
        joiner.close()
        await coalescer.close()

    asyncio.run(run())
