"""The Python ceiling: a grpc.aio server that answers every etcd v3 method with fixed bytes.

It does no work per request beyond what grpc.aio itself does (no deserialization, no
serialization: the handlers take and return raw bytes), so the throughput it reaches under a load
is the upper bound for any single-process Python server under that load.

    python -m bench.null_server --listen-addr 127.0.0.1:23999
"""

from __future__ import annotations

import argparse
import asyncio

from cluster import cpu_policy, grpc_runtime

grpc_runtime.configure()  # the same gRPC I/O as a member's, before grpc is imported

import grpc  # noqa: E402

from protos.etcdserverpb import rpc_pb2  # noqa: E402

# One response for every method: a ResponseHeader-only message parses as any etcd response type
# (they all carry the header as field 1), so clients and h2load see a well-formed reply.
FIXED_RESPONSE = rpc_pb2.PutResponse(
    header=rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=1, raft_term=1)).SerializeToString()


async def _unary(request: bytes, context) -> bytes:
    return FIXED_RESPONSE


async def _stream(request_iterator, context):
    async for _ in request_iterator:
        yield FIXED_RESPONSE


def _handlers() -> list[grpc.GenericRpcHandler]:
    handlers = []
    for service in rpc_pb2.DESCRIPTOR.services_by_name.values():
        methods = {}
        for m in service.methods:
            if m.client_streaming or m.server_streaming:
                methods[m.name] = grpc.stream_stream_rpc_method_handler(_stream)
            else:
                methods[m.name] = grpc.unary_unary_rpc_method_handler(_unary)
        handlers.append(grpc.method_handlers_generic_handler(service.full_name, methods))
    return handlers


async def serve(listen_addr: str) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(_handlers())
    server.add_insecure_port(listen_addr)
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen-addr", required=True, help="host:port")
    args = p.parse_args(argv)
    cpu_policy.configure()  # the members' and proxy's policy, so the ceiling compares like with like
    asyncio.run(serve(args.listen_addr))


if __name__ == "__main__":
    main()
