"""Registers servicers on a grpc.aio server the way etcd's grpc-go server behaves at the edges.

Python grpc answers an unparseable request body with UNKNOWN and its own text; grpc-go (so etcd)
answers INTERNAL "grpc: error unmarshalling request: <reason>". `add_servicer` registers each
method with a deserializer that turns a DecodeError into an `UnparseableRequest` marker, and a thin
wrapper that aborts such calls with INTERNAL and that prefix before the servicer sees them.
The reason text after the prefix is protobuf-python's, not Go's.
"""

from __future__ import annotations

import contextlib

import grpc
from google.protobuf.message import DecodeError

_UNMARSHAL_PREFIX = "grpc: error unmarshalling request: "


class UnparseableRequest:
    """Stands in for a request message whose bytes did not parse."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _lenient(from_string):
    def deserialize(data: bytes):
        try:
            return from_string(data)
        except DecodeError as exc:
            return UnparseableRequest(str(exc))
    return deserialize


async def _abort_unparseable(context, request: UnparseableRequest):
    await context.abort(grpc.StatusCode.INTERNAL, _UNMARSHAL_PREFIX + request.reason)


def _unary_unary(behavior):
    async def handle(request, context):
        if type(request) is UnparseableRequest:
            await _abort_unparseable(context, request)
        return await behavior(request, context)
    return handle


def _unary_stream(behavior):
    async def handle(request, context):
        if type(request) is UnparseableRequest:
            await _abort_unparseable(context, request)
        # if the call ends while we are suspended at `yield` (e.g. a client cancel during a
        # write), aclosing closes the servicer's generator at once, so its cleanup runs now
        async with contextlib.aclosing(behavior(request, context)) as responses:
            async for resp in responses:
                yield resp
    return handle


def _stream_stream(behavior):
    async def checked(requests, context):
        async for req in requests:
            if type(req) is UnparseableRequest:
                await _abort_unparseable(context, req)
            yield req

    async def handle(request_iterator, context):
        async with contextlib.aclosing(behavior(checked(request_iterator, context), context)) as responses:
            async for resp in responses:
                yield resp
    return handle


def add_servicer(server, service, servicer, messages) -> None:
    """Register every method of `service` (a protobuf ServiceDescriptor) implemented by
    `servicer` on `server` (a grpc.aio.Server or a cluster.grpc_wrapping.WrappingServer);
    `messages` is the generated module holding its request/response classes."""
    handlers = {}
    for method in service.methods:
        req_cls = getattr(messages, method.input_type.name)
        resp_cls = getattr(messages, method.output_type.name)
        behavior = getattr(servicer, method.name)
        kw = dict(request_deserializer=_lenient(req_cls.FromString),
                  response_serializer=resp_cls.SerializeToString)
        if not method.client_streaming and not method.server_streaming:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(_unary_unary(behavior), **kw)
        elif not method.client_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(_unary_stream(behavior), **kw)
        elif method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(_stream_stream(behavior), **kw)
        else:
            raise ValueError(f"client-streaming-only method {method.full_name} is not used by etcd")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
