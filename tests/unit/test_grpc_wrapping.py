"""WrappingServer: which handlers get wrapped, in what order, and how often."""

from __future__ import annotations

import asyncio
from collections import namedtuple

import grpc

from cluster.grpc_wrapping import WrappingServer


CallDetails = namedtuple("CallDetails", "method invocation_metadata")


class RecordingServer:
    """Takes registrations as grpc.aio.Server does, and keeps them."""

    def __init__(self):
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers):
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service, handlers):
        self.registered[service] = handlers

    def find(self, method: str):
        details = CallDetails(method, ())
        for h in self.generic:
            found = h.service(details)
            if found is not None:
                return found
        return None


def tagging(tag: str, log: list):
    """A wrap that records each wrapping and appends `tag` to what the behavior returns."""
    def wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        log.append((tag, method))
        inner = handler.unary_unary

        async def behavior(request, context):
            return await inner(request, context) + tag
        return handler._replace(unary_unary=behavior)
    return wrap


async def echo(request, context):
    return request


def test_first_wrap_is_outermost_and_each_method_is_wrapped_once():
    log: list = []
    server = RecordingServer()
    registering = WrappingServer(server, [tagging("a", log), tagging("b", log)])
    registering.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "t.S", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})])

    first = server.find("/t.S/Echo")
    assert server.find("/t.S/Echo") is first  # wrapped once, then reused
    assert log == [("b", "/t.S/Echo"), ("a", "/t.S/Echo")]
    # "b" wraps the servicer, "a" wraps "b": a's suffix comes last
    assert asyncio.run(first.unary_unary("x", None)) == "xba"


def test_unknown_methods_are_not_wrapped_nor_remembered():
    log: list = []
    server = RecordingServer()
    WrappingServer(server, [tagging("a", log)]).add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("t.S", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})])
    for i in range(3):
        assert server.find(f"/t.S/Nope{i}") is None
    assert log == []
    assert server.generic[0]._wrapped == {}


def test_registered_method_handlers_are_wrapped_with_their_full_names():
    log: list = []
    server = RecordingServer()
    WrappingServer(server, [tagging("a", log)]).add_registered_method_handlers(
        "t.S", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    assert log == [("a", "/t.S/Echo")]
    assert asyncio.run(server.registered["t.S"]["Echo"].unary_unary("x", None)) == "xa"
