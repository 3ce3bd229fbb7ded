"""KeepAliveMerger against a scripted upstream: concurrent keepalives of one lease are merged, a
keepalive is only ever answered by an upstream keepalive sent after it arrived, with the upstream's
TTL, and a broken upstream stream is retried on a new one."""

from __future__ import annotations

import asyncio

import grpc

from protos.etcdserverpb import rpc_pb2
from proxy.coalesce.lease_keepalive import KeepAliveMerger


class FakeKeepAliveCall:
    def __init__(self):
        self.sent: list[int] = []
        self.responses: asyncio.Queue = asyncio.Queue()

    async def write(self, req):
        self.sent.append(req.ID)

    async def read(self):
        item = await self.responses.get()
        if isinstance(item, Exception):
            raise item
        return item

    def cancel(self):
        pass


class FakeUpstream:
    def __init__(self):
        self.calls: list[FakeKeepAliveCall] = []
        self.lease = self

    def LeaseKeepAlive(self, metadata=None):
        self.calls.append(FakeKeepAliveCall())
        return self.calls[-1]


def answer(lease_id: int, ttl: int) -> rpc_pb2.LeaseKeepAliveResponse:
    return rpc_pb2.LeaseKeepAliveResponse(ID=lease_id, TTL=ttl, header=rpc_pb2.ResponseHeader(revision=ttl))


async def until(condition, what: str) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


def test_keepalives_arriving_during_one_in_flight_share_the_next_one():
    async def run():
        upstream = FakeUpstream()
        merger = KeepAliveMerger(upstream)
        stream = merger.acquire(())
        first = asyncio.ensure_future(stream.keep_alive(7))
        await until(lambda: upstream.calls and upstream.calls[0].sent == [7], "first keepalive sent")
        later = [asyncio.ensure_future(stream.keep_alive(7)) for _ in range(5)]
        other = asyncio.ensure_future(stream.keep_alive(8))
        await until(lambda: upstream.calls[0].sent == [7, 8], "lease 8 sent alongside")
        call = upstream.calls[0]
        call.responses.put_nowait(answer(7, 10))
        assert (await first).TTL == 10
        # The five that arrived while 7 was in flight must not take that answer: a new one is sent.
        await until(lambda: call.sent == [7, 8, 7], "the merged second keepalive")
        assert not any(f.done() for f in later)
        call.responses.put_nowait(answer(8, 30))
        call.responses.put_nowait(answer(7, 9))
        assert [(await f).TTL for f in later] == [9] * 5
        assert (await other).TTL == 30
        assert call.sent == [7, 8, 7], "6 client keepalives of lease 7 cost 2 upstream"
        await merger.release(())

    asyncio.run(run())


def test_a_broken_upstream_stream_is_retried_on_a_new_one():
    async def run():
        upstream = FakeUpstream()
        merger = KeepAliveMerger(upstream)
        stream = merger.acquire(())
        pending = asyncio.ensure_future(stream.keep_alive(7))
        await until(lambda: upstream.calls and upstream.calls[0].sent == [7], "sent")
        upstream.calls[0].responses.put_nowait(grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "member died"))
        await until(lambda: len(upstream.calls) == 2 and upstream.calls[1].sent == [7], "re-sent")
        upstream.calls[1].responses.put_nowait(answer(7, 5))
        assert (await pending).TTL == 5
        await merger.release(())

    asyncio.run(run())
