"""LearnerGate.wrap: while the member is a learner, refused calls end with etcd's error before the
servicer runs; serializable Range and Status still pass; a promotion takes effect at the next call."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cluster.server.learner_gate import LearnerGate
from protos.etcdserverpb import rpc_pb2

REFUSED = (grpc.StatusCode.UNAVAILABLE, "etcdserver: rpc not supported for learner")


class Aborted(Exception):
    pass


class Context:
    """What the gate uses of grpc.aio's ServicerContext: abort() raises, as grpc's does."""

    async def abort(self, code, details):
        raise Aborted(code, details)


async def unary(request, context):
    return "served"


async def streaming(request, context):
    yield "event"


def gate_for(state: dict) -> LearnerGate:
    return LearnerGate(lambda: state["learner"])


def call_unary(handler, request):
    return asyncio.run(handler.unary_unary(request, Context()))


def call_stream(handler):
    async def collect():
        return [r async for r in handler.unary_stream(rpc_pb2.WatchRequest(), Context())]
    return asyncio.run(collect())


def test_a_learner_refuses_writes_and_linearizable_reads_but_serves_serializable_reads_and_status():
    state = {"learner": True}
    gate = gate_for(state)
    put = gate.wrap(grpc.unary_unary_rpc_method_handler(unary), "/etcdserverpb.KV/Put")
    rng = gate.wrap(grpc.unary_unary_rpc_method_handler(unary), "/etcdserverpb.KV/Range")
    status = gate.wrap(grpc.unary_unary_rpc_method_handler(unary), "/etcdserverpb.Maintenance/Status")
    with pytest.raises(Aborted) as exc:
        call_unary(put, rpc_pb2.PutRequest(key=b"k"))
    assert exc.value.args == REFUSED
    with pytest.raises(Aborted):
        call_unary(rng, rpc_pb2.RangeRequest(key=b"k"))
    assert call_unary(rng, rpc_pb2.RangeRequest(key=b"k", serializable=True)) == "served"
    assert call_unary(status, rpc_pb2.StatusRequest()) == "served"
    state["learner"] = False  # promoted
    assert call_unary(put, rpc_pb2.PutRequest(key=b"k")) == "served"


def test_a_learner_refuses_streams_until_promoted():
    state = {"learner": True}
    watch = gate_for(state).wrap(grpc.unary_stream_rpc_method_handler(streaming), "/etcdserverpb.Watch/Watch")
    with pytest.raises(Aborted) as exc:
        call_stream(watch)
    assert exc.value.args == REFUSED
    state["learner"] = False
    assert call_stream(watch) == ["event"]


def test_methods_outside_the_etcd_api_are_left_alone():
    handler = grpc.unary_unary_rpc_method_handler(unary)
    gate = gate_for({"learner": True})
    assert gate.wrap(handler, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is handler
