"""RequireLeaderGate: calls with `hasleader: true` are refused while the member knows no leader,
and such streams are ended with etcd's error after three leaderless checks in a row, whether they
are waiting on the servicer or handing a response to grpc; other calls are never touched."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cluster.server.leader_gate import MAX_NO_LEADER_CHECKS, RequireLeaderGate
from protos.etcdserverpb import rpc_pb2

NO_LEADER = (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
INTERVAL = 0.01
REQUIRE = (("hasleader", "true"),)


class Aborted(Exception):
    pass


class Context:
    """What the gate uses of grpc.aio's ServicerContext; abort() raises, as grpc's does."""

    def __init__(self, metadata=()):
        self._metadata = metadata

    def invocation_metadata(self):
        return self._metadata

    async def abort(self, code, details):
        raise Aborted(code, details)


async def unary(request, context):
    return "served"


class Servicer:
    """A watch-like stream: one response at once, then one per `more.set()`; records its end."""

    def __init__(self):
        self.more = asyncio.Event()
        self.closed = False

    async def stream(self, request, context):
        try:
            yield "created"
            while True:
                await self.more.wait()
                self.more.clear()
                yield "event"
        finally:
            self.closed = True


def watch_handler(gate: RequireLeaderGate, servicer: Servicer):
    return gate.wrap(grpc.unary_stream_rpc_method_handler(servicer.stream), "/etcdserverpb.Watch/Watch")


def test_unary_calls_asking_for_a_leader_are_refused_while_there_is_none():
    state = {"leader": False}
    gate = RequireLeaderGate(lambda: state["leader"], INTERVAL)
    put = gate.wrap(grpc.unary_unary_rpc_method_handler(unary), "/etcdserverpb.KV/Put")
    with pytest.raises(Aborted) as exc:
        asyncio.run(put.unary_unary(rpc_pb2.PutRequest(key=b"k"), Context(REQUIRE)))
    assert exc.value.args == NO_LEADER
    assert asyncio.run(put.unary_unary(rpc_pb2.PutRequest(key=b"k"), Context())) == "served"
    assert asyncio.run(put.unary_unary(rpc_pb2.PutRequest(key=b"k"), Context((("hasleader", "false"),)))) == "served"
    state["leader"] = True
    assert asyncio.run(put.unary_unary(rpc_pb2.PutRequest(key=b"k"), Context(REQUIRE))) == "served"


def test_a_stream_asking_for_a_leader_is_refused_at_start_while_there_is_none():
    gate = RequireLeaderGate(lambda: False, INTERVAL)
    servicer = Servicer()
    watch = watch_handler(gate, servicer)

    async def first(context):
        async for response in watch.unary_stream(rpc_pb2.WatchRequest(), context):
            return response

    with pytest.raises(Aborted) as exc:
        asyncio.run(first(Context(REQUIRE)))
    assert exc.value.args == NO_LEADER
    assert asyncio.run(first(Context())) == "created"


async def settle() -> None:
    """Let every ready task run (the gate's checks are driven by hand, so no clock is involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_waiting_streams_end_with_no_leader_after_three_leaderless_checks_others_stay():
    async def scenario():
        state = {"leader": True}
        gate = RequireLeaderGate(lambda: state["leader"], INTERVAL)
        requiring, plain = Servicer(), Servicer()
        results = {}

        async def consume(name, servicer, context):
            seen = []
            try:
                async for response in watch_handler(gate, servicer).unary_stream(rpc_pb2.WatchRequest(), context):
                    seen.append(response)
            except Aborted as exc:
                results[name] = (seen, exc.args)

        tasks = [asyncio.create_task(consume("requiring", requiring, Context(REQUIRE))),
                 asyncio.create_task(consume("plain", plain, Context()))]
        await settle()  # both idle, waiting for events
        assert gate.stream_count == 1
        state["leader"] = False
        for _ in range(MAX_NO_LEADER_CHECKS - 1):
            gate.check()
            await settle()
        assert not results
        gate.check()
        await settle()
        assert results == {"requiring": (["created"], NO_LEADER)}
        assert requiring.closed and not plain.closed and gate.stream_count == 0
        plain.more.set()  # the stream without the metadata still delivers
        await settle()
        assert not tasks[1].done()
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


def test_a_stream_handing_a_response_to_grpc_ends_when_grpc_asks_for_the_next():
    async def scenario():
        state = {"leader": True}
        gate = RequireLeaderGate(lambda: state["leader"], INTERVAL)
        servicer = Servicer()
        responses = watch_handler(gate, servicer).unary_stream(rpc_pb2.WatchRequest(), Context(REQUIRE))
        assert await anext(responses) == "created"  # suspended at its yield, as while grpc sends
        state["leader"] = False
        for _ in range(MAX_NO_LEADER_CHECKS):
            gate.check()
        await settle()
        assert not servicer.closed  # not cancelled inside grpc's send
        with pytest.raises(Aborted) as exc:
            await anext(responses)
        assert exc.value.args == NO_LEADER and servicer.closed

    asyncio.run(scenario())


def test_a_leader_back_before_the_third_check_ends_nothing():
    async def scenario():
        state = {"leader": True}
        gate = RequireLeaderGate(lambda: state["leader"], INTERVAL)
        servicer = Servicer()
        responses = watch_handler(gate, servicer).unary_stream(rpc_pb2.WatchRequest(), Context(REQUIRE))
        assert await anext(responses) == "created"
        pending = asyncio.ensure_future(anext(responses))
        for _ in range(3):  # leaderless for MAX_NO_LEADER_CHECKS - 1 checks, then a leader again
            state["leader"] = False
            for _ in range(MAX_NO_LEADER_CHECKS - 1):
                gate.check()
            state["leader"] = True
            gate.check()
        await settle()
        assert not pending.done()
        servicer.more.set()
        assert await pending == "event"
        await responses.aclose()

    asyncio.run(scenario())


def test_a_servicer_that_returns_when_cancelled_still_ends_with_no_leader():
    async def quiet(request, context):
        yield "created"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # swallows the cancellation

    async def scenario():
        state = {"leader": True}
        gate = RequireLeaderGate(lambda: state["leader"], INTERVAL)
        handler = gate.wrap(grpc.unary_stream_rpc_method_handler(quiet), "/etcdserverpb.Watch/Watch")
        seen = []

        async def consume():
            async for response in handler.unary_stream(rpc_pb2.WatchRequest(), Context(REQUIRE)):
                seen.append(response)

        task = asyncio.create_task(consume())
        await settle()
        state["leader"] = False
        for _ in range(MAX_NO_LEADER_CHECKS):
            gate.check()
        with pytest.raises(Aborted) as exc:
            await task
        assert exc.value.args == NO_LEADER and seen == ["created"]
        assert task.cancelling() == 0  # the gate answered its own cancellation

    asyncio.run(scenario())


def test_the_monitor_ends_a_stream_once_the_leader_stays_gone():
    async def scenario():
        state = {"leader": True}
        gate = RequireLeaderGate(lambda: state["leader"], INTERVAL)
        servicer = Servicer()
        responses = watch_handler(gate, servicer).unary_stream(rpc_pb2.WatchRequest(), Context(REQUIRE))
        assert await anext(responses) == "created"
        pending = asyncio.ensure_future(anext(responses))
        monitor = asyncio.create_task(gate.run())
        state["leader"] = False
        try:
            await asyncio.wait_for(pending, 30)  # run() checks every INTERVAL
        except Aborted as exc:
            assert exc.args == NO_LEADER
        else:
            raise AssertionError("the stream was not ended")
        finally:
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)

    asyncio.run(scenario())


def test_methods_outside_the_etcd_api_are_left_alone():
    handler = grpc.unary_unary_rpc_method_handler(unary)
    gate = RequireLeaderGate(lambda: False, INTERVAL)
    assert gate.wrap(handler, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is handler
