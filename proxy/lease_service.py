"""The proxy's etcd Lease service.

- LeaseGrant, LeaseRevoke, LeaseTimeToLive, LeaseLeases: forwarded upstream with the client's
  metadata (its token) and deadline; upstream errors pass through with their code and message.
  LeaseTimeToLive's attached keys lose the --namespace prefix (keys outside it are not shown).
- LeaseKeepAlive: each client request is answered, in order, with the cluster's own response to a
  keepalive sent after the request arrived, through the `KeepAliveMerger` (one upstream stream per
  identity; concurrent keepalives of one lease merged). The TTL a client sees is the cluster's.

`add_to_server(server, upstream, namespace)` registers it and returns the `LeaseService` (close it
after the server stops).
"""

from __future__ import annotations

import grpc

from cluster.grpc_wrapping import WrappingServer
from protos.etcdserverpb import rpc_pb2_grpc

from .coalesce.lease_keepalive import KeepAliveMerger, KeepAliveUnavailable
from .namespace import Namespace
from .upstream import Upstream, forwarded_metadata

IDENTITY_KEYS = ("token", "authorization")


def _identity(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    md = context.invocation_metadata() or ()
    return tuple(sorted((k, v) for k, v in md if k in IDENTITY_KEYS))


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    """etcdserverpb.Lease in the proxy: unary calls forwarded, keepalives merged."""

    def __init__(self, upstream: Upstream, namespace: Namespace):
        self._lease = upstream.lease
        self._namespace = namespace
        self.keepalives = KeepAliveMerger(upstream)

    async def _forward(self, method, request, context: grpc.aio.ServicerContext):
        try:
            return await method(request, metadata=forwarded_metadata(context),
                                timeout=context.time_remaining())
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details() or "")

    async def LeaseGrant(self, request, context):
        return await self._forward(self._lease.LeaseGrant, request, context)

    async def LeaseRevoke(self, request, context):
        return await self._forward(self._lease.LeaseRevoke, request, context)

    async def LeaseLeases(self, request, context):
        return await self._forward(self._lease.LeaseLeases, request, context)

    async def LeaseTimeToLive(self, request, context):
        resp = await self._forward(self._lease.LeaseTimeToLive, request, context)
        if self._namespace.active and resp.keys:
            prefix = self._namespace.prefix
            keys = [self._namespace.strip(k) for k in resp.keys if k.startswith(prefix)]
            del resp.keys[:]
            resp.keys.extend(keys)
        return resp

    async def LeaseKeepAlive(self, request_iterator, context):
        identity = _identity(context)
        stream = self.keepalives.acquire(identity)
        try:
            async for req in request_iterator:
                try:
                    resp = await stream.keep_alive(req.ID)
                except KeepAliveUnavailable as e:
                    await context.abort(e.code, e.details)
                yield resp
        finally:
            await self.keepalives.release(identity)

    async def close(self) -> None:
        await self.keepalives.close()


def add_to_server(server: grpc.aio.Server | WrappingServer, upstream: Upstream, namespace: Namespace) -> LeaseService:
    """Register the Lease service on `server`."""
    service = LeaseService(upstream, namespace)
    rpc_pb2_grpc.add_LeaseServicer_to_server(service, server)
    return service
