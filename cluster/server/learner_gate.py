"""`LearnerGate`: a gRPC server interceptor that refuses what a learner must not serve (etcd 3.4's
v3rpc interceptors): while this member is a learner, every etcd API call except Status and
serializable Range fails with "etcdserver: rpc not supported for learner" (Unavailable), and
every streaming call (Watch, LeaseKeepAlive, Snapshot) too. Whether the member is a learner is
asked per call (`is_learner()`, cheap), so a promotion takes effect at the next call; a member
that is not a learner gets its handlers unchanged.
"""

from __future__ import annotations

from typing import Callable

import grpc

from protos.etcdserverpb import rpc_pb2

from .errors import NOT_SUPPORTED_FOR_LEARNER

_ETCD_API = "/etcdserverpb."


def supported_for_learner(request) -> bool:
    if isinstance(request, rpc_pb2.StatusRequest):
        return True
    return isinstance(request, rpc_pb2.RangeRequest) and request.serializable


async def _refuse(context) -> None:
    await context.abort(NOT_SUPPORTED_FOR_LEARNER.code, NOT_SUPPORTED_FOR_LEARNER.message)


class LearnerGate(grpc.aio.ServerInterceptor):
    """Refuses client calls a learner does not serve (see the module docstring)."""

    def __init__(self, is_learner: Callable[[], bool]):
        self._is_learner = is_learner

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if (handler is None or not self._is_learner()
                or not handler_call_details.method.startswith(_ETCD_API)):
            return handler
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def gated(request, context):
                if not supported_for_learner(request):
                    await _refuse(context)
                return await behavior(request, context)

            return grpc.unary_unary_rpc_method_handler(
                gated, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)

        async def refused(request, context):
            await _refuse(context)

        make = (grpc.stream_stream_rpc_method_handler if handler.request_streaming and handler.response_streaming
                else grpc.stream_unary_rpc_method_handler if handler.request_streaming
                else grpc.unary_stream_rpc_method_handler)
        return make(refused, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
