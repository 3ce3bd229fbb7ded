"""`HealthService`: the gRPC health checking protocol (grpc.health.v1.Health) on the client URLs,
as etcd 3.4 serves it: the server as a whole (service "") is SERVING for as long as it serves
clients at all; any other service name is unknown (Check: NOT_FOUND "unknown service", as
grpc-go's health server answers; Watch: SERVICE_UNKNOWN). grpc_health_probe and gRPC-aware load
balancers use it; etcd's own tools use Status and /health instead.

A Watch sends the status once and then stays open until the client cancels (the status never
changes while the member serves); the member's shutdown ends it with the server.
"""

from __future__ import annotations

import asyncio

import grpc

from protos.healthpb import health_pb2

SERVER = ""  # the service name that stands for the whole server
_Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthService:
    """grpc.health.v1.Health for the member (see the module docstring)."""

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext):
        if request.service != SERVER:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return health_pb2.HealthCheckResponse(status=_Status.SERVING)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext):
        known = request.service == SERVER
        yield health_pb2.HealthCheckResponse(status=_Status.SERVING if known else _Status.SERVICE_UNKNOWN)
        await asyncio.Event().wait()  # no change to report: until the client cancels
