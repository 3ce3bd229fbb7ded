"""A do-nothing grpc.aio server for measuring GrpcServerMetrics' per-call cost.

    python -m tests.integration.monitoring.noop_server PORT [--metrics]

Every call to /etcdserverpb.KV/Range answers the same pre-serialized RangeResponse, without
parsing the request: the cheapest a grpc.aio unary method can be (like the proxy's cache hit).
With --metrics its handler is wrapped by GrpcServerMetrics, registered in the global REGISTRY.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import grpc.aio

from cluster.grpc_wrapping import WrappingServer
from monitoring.grpc_metrics import GrpcServerMetrics
from protos.etcdserverpb import rpc_pb2

RESPONSE = rpc_pb2.RangeResponse(count=1).SerializeToString()


async def range_handler(request: bytes, context) -> bytes:
    return RESPONSE


async def serve(port: int, with_metrics: bool) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    registering = WrappingServer(server, [GrpcServerMetrics().wrap] if with_metrics else [])
    registering.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "etcdserverpb.KV", {"Range": grpc.unary_unary_rpc_method_handler(range_handler)})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), "--metrics" in sys.argv[2:]))
