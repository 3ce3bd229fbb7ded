"""`LearnerGate`: refuses what a learner must not serve (etcd 3.4's v3rpc interceptors): while
this member is a learner, every etcd API call except Status and serializable Range fails with
"etcdserver: rpc not supported for learner" (Unavailable), and every streaming call (Watch,
LeaseKeepAlive, Snapshot) too. `wrap` is applied to every handler at registration
(cluster/grpc_wrapping.py); the member installs it only if it may ever be a learner. Whether it
is one is asked at the start of each call (`is_learner()`, cheap), so a promotion takes effect
at the next call.
"""

from __future__ import annotations

import contextlib
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


class LearnerGate:
    """Refuses client calls a learner does not serve (see the module docstring)."""

    def __init__(self, is_learner: Callable[[], bool]):
        self._is_learner = is_learner

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if not method.startswith(_ETCD_API):
            return handler
        is_learner = self._is_learner
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def gated(request, context):
                if is_learner() and not supported_for_learner(request):
                    await _refuse(context)
                return await behavior(request, context)

            return handler._replace(unary_unary=gated)
        if handler.response_streaming:
            field = "stream_stream" if handler.request_streaming else "unary_stream"
            streaming = getattr(handler, field)

            async def gated_stream(request, context):
                if is_learner():
                    await _refuse(context)
                async with contextlib.aclosing(streaming(request, context)) as responses:
                    async for response in responses:
                        yield response

            return handler._replace(**{field: gated_stream})
        raise ValueError(f"{method}: client-streaming-only methods are not part of etcd's API")
