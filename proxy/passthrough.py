"""Cluster, Maintenance and Auth: forwarded to the cluster as they are, bytes in, bytes out.

Each method of these services (taken from the protobuf service descriptors, so none is missed) is
served by a forwarder that sends the client's request bytes upstream with the client's forwarded
metadata (its token) and deadline, waiting for a connection to the cluster if there is none yet
(as etcd's clientv3 does; bounded by the client's deadline), and returns the cluster's answer
bytes. Nothing is parsed, nothing is cached, nothing is rewritten by --namespace (etcd's
grpc-proxy does not namespace these either). Upstream errors pass through with their status code and message unchanged.

Maintenance.Snapshot is a server stream: chunks are relayed one at a time, and the next chunk is
only read from the cluster once the client has taken the previous one (grpc flow control), so a
slow client holds at most one chunk in the proxy.
"""

from __future__ import annotations

import grpc

from cluster.grpc_wrapping import WrappingServer
from protos.etcdserverpb import rpc_pb2

from .upstream import Upstream, forwarded_metadata

SERVICES = ("Cluster", "Maintenance", "Auth")


def _identity(b: bytes) -> bytes:
    return b


class PassthroughService:
    """Forwarders for every method of one etcd service (`name` as in rpc.proto, e.g. "Auth")."""

    def __init__(self, upstream: Upstream, name: str):
        self.descriptor = rpc_pb2.DESCRIPTOR.services_by_name[name]
        self.full_name = self.descriptor.full_name
        self._channel = upstream.channel

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        handlers = {}
        for method in self.descriptor.methods:
            path = f"/{self.full_name}/{method.name}"
            if method.client_streaming:
                raise NotImplementedError(f"{path}: client streams are not relayed")  # none in etcd v3
            if method.server_streaming:
                call = self._channel.unary_stream(path, request_serializer=_identity,
                                                  response_deserializer=_identity)
                handlers[method.name] = grpc.unary_stream_rpc_method_handler(_stream_forwarder(call))
            else:
                call = self._channel.unary_unary(path, request_serializer=_identity,
                                                 response_deserializer=_identity)
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(_unary_forwarder(call))
        return handlers


def _unary_forwarder(call):
    async def forward(raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return await call(raw, metadata=forwarded_metadata(context), timeout=context.time_remaining(),
                              wait_for_ready=True)
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details() or "")

    return forward


def _stream_forwarder(call):
    async def forward(raw: bytes, context: grpc.aio.ServicerContext):
        upstream_call = call(raw, metadata=forwarded_metadata(context), timeout=context.time_remaining(),
                             wait_for_ready=True)
        try:
            async for chunk in upstream_call:
                yield chunk
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details() or "")
        finally:
            upstream_call.cancel()

    return forward


def add_to_server(server: grpc.aio.Server | WrappingServer, upstream: Upstream) -> None:
    """Register the Cluster, Maintenance and Auth forwarders on `server`."""
    for name in SERVICES:
        service = PassthroughService(upstream, name)
        handlers = service.method_handlers()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
        server.add_registered_method_handlers(service.full_name, handlers)
