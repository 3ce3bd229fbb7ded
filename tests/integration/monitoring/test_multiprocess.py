"""Two real worker processes publish; the parent's endpoint serves their sum, and keeps it on exit.

The workers' periodic interval is long (60 s): every count seen here was published on the
parent's refresh request, so each scrape is exact at once.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc.aio

from monitoring.http import MetricsHTTPServer
from monitoring.multiprocess import WorkerSnapshotCollector, parent_registry, prepare_directory
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.integration.monitoring.scraping import promtool_problems, scrape
from cluster.launch import free_port, port_open, wait_until

RANGE = dict(grpc_method="Range", grpc_service="etcdserverpb.KV", grpc_type="unary")


async def call_range(port: int, times: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        for _ in range(times):
            await kv.Range(rpc_pb2.RangeRequest(key=b"k" * 50))


def test_parent_serves_the_sum_of_two_workers(procs, tmp_path):
    directory = str(tmp_path / "snapshots")
    prepare_directory(directory)
    ports = {"w1": free_port(), "w2": free_port()}
    workers = {name: procs.start(name, [sys.executable, "-m", "tests.integration.monitoring.worker_process",
                                        str(port), directory, "60"])
               for name, port in ports.items()}
    for name, port in ports.items():
        wait_until(lambda: port_open(port), 20, f"worker {name} on :{port}")
    collector = WorkerSnapshotCollector(directory)
    live = {name: proc.pid for name, proc in workers.items()}

    async def scenario():
        endpoint = MetricsHTTPServer(parent_registry(collector),
                                     before_scrape=lambda: collector.refresh(live.values(), timeout=5))
        await endpoint.start(["http://127.0.0.1:0"])
        port = endpoint.ports[0]
        try:
            await call_range(ports["w1"], 3)
            await call_range(ports["w2"], 2)
            both = await scrape(port)

            await asyncio.to_thread(procs.kill, "w1", signal.SIGTERM)  # graceful: final snapshot
            collector.retire(live.pop("w1"))
            await call_range(ports["w2"], 1)
            after_exit = await scrape(port)
        finally:
            await endpoint.stop()
        return both, after_exit

    both, after_exit = asyncio.run(scenario())

    assert both.value("kvproxy_test_reads_total") == 5
    assert both.value("grpc_server_handled_total", grpc_code="OK", **RANGE) == 5
    assert both.value("grpc_server_started_total", **RANGE) == 5
    assert both.value("grpc_server_msg_sent_total", **RANGE) == 5
    assert both.value("grpc_server_handling_seconds_count", **RANGE) == 5
    assert both.value("kvproxy_test_cache_entries") == 20  # gauges: summed over live workers
    assert both.value("kvproxy_test_value_bytes_bucket", le="10.0") == 0
    assert both.value("kvproxy_test_value_bytes_bucket", le="100.0") == 5
    assert both.value("kvproxy_test_value_bytes_sum") == 250
    assert both.names_with("kvproxy_test_reads_created") == []
    # process_* and python_* are the parent's own, once each.
    assert both.text.count("# TYPE process_cpu_seconds_total counter") == 1
    assert both.text.count("# TYPE python_info gauge") == 1
    assert promtool_problems(both.text) == ""

    # Worker 1 has gone: its counts stay in the totals, its gauge has left them.
    assert after_exit.value("kvproxy_test_reads_total") == 6
    assert after_exit.value("grpc_server_handled_total", grpc_code="OK", **RANGE) == 6
    assert after_exit.value("kvproxy_test_value_bytes_count") == 6
    assert after_exit.value("kvproxy_test_cache_entries") == 10
