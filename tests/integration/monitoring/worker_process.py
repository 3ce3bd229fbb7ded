"""A proxy-like worker for the multiprocess test: serves KV.Range, records, publishes snapshots.

    python -m tests.integration.monitoring.worker_process GRPC_PORT SNAPSHOT_DIR INTERVAL

Everything is recorded in the global REGISTRY, as proxy code does by default: the gRPC server
metrics, and one regular Counter, Gauge and Histogram. SIGTERM stops it after a final snapshot.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc.aio
from prometheus_client import Counter, Gauge, Histogram

from cluster.grpc_wrapping import WrappingServer
from monitoring.grpc_metrics import GrpcServerMetrics
from monitoring.multiprocess import SnapshotPublisher
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

READS = Counter("kvproxy_test_reads_total", "Range calls served by this worker.")
ENTRIES = Gauge("kvproxy_test_cache_entries", "Entries in this worker's cache (10 each).")
SIZES = Histogram("kvproxy_test_value_bytes", "Sizes of values served.", buckets=(10, 100))


class CountingKV(rpc_pb2_grpc.KVServicer):
    async def Range(self, request, context):
        READS.inc()
        SIZES.observe(len(request.key))
        return rpc_pb2.RangeResponse(count=1)


async def main(port: int, directory: str, interval: float) -> None:
    ENTRIES.set(10)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    rpc_pb2_grpc.add_KVServicer_to_server(CountingKV(), WrappingServer(server, [GrpcServerMetrics().wrap]))
    server.add_insecure_port(f"127.0.0.1:{port}")
    publisher = SnapshotPublisher(directory, interval=interval)
    await publisher.start()
    await server.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.stop(None)
    await publisher.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3])))
