"""A do-nothing grpc.aio server: every KV Range returns the same pre-serialized bytes.

The Python ceiling of BASELINES.md, run beside the proxy so throughput is compared in one run:
`python -m tests.integration.proxy.null_server PORT`.
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from protos.etcdserverpb import rpc_pb2
from protos.mvccpb import kv_pb2

REPLY = rpc_pb2.RangeResponse(
    header=rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=2, raft_term=2),
    kvs=[kv_pb2.KeyValue(key=b"foo", value=b"v" * 256, create_revision=2, mod_revision=2, version=1)],
    count=1).SerializeToString()


async def range_(request: bytes, context) -> bytes:
    return REPLY


async def main(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handlers = {"Range": grpc.unary_unary_rpc_method_handler(range_)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("etcdserverpb.KV", handlers),))
    server.add_registered_method_handlers("etcdserverpb.KV", handlers)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
