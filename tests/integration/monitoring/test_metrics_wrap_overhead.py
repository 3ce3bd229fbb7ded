"""What GrpcServerMetrics costs per call: a do-nothing server with and without it, under h2load.

Opt-in (pytest -m bench): it runs for a minute. The two servers take turns under the same load,
so that the machine's noise hits both alike; we compare the median throughput and the server's
CPU time per request (user + system, from /proc), which is less sensitive to other load.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import struct
import subprocess
import sys

import grpc.aio
import pytest

from protos.etcdserverpb import rpc_pb2
from cluster.launch import free_port, port_open, wait_until

ROUNDS = 3
REQUESTS = 20000
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def h2load(port: int, body_path: str) -> float:
    """Requests per second of one h2load run; every request must have got a 2xx."""
    out = subprocess.run(
        ["h2load", "-n", str(REQUESTS), "-c", "100", "-m", "10", "-t", "1", "-d", body_path,
         "-H", "content-type:application/grpc", "-H", "te:trailers",
         f"http://127.0.0.1:{port}/etcdserverpb.KV/Range"],
        capture_output=True, text=True, timeout=300).stdout
    assert f"status codes: {REQUESTS} 2xx" in out, out
    return float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))


async def grpc_status_ok(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/etcdserverpb.KV/Range")(b"")
        await call
        return await call.code() == grpc.StatusCode.OK


@pytest.mark.bench
def test_metrics_wrap_keeps_80_percent_of_a_do_nothing_server(procs, tmp_path):
    request = rpc_pb2.RangeRequest(key=b"foo", serializable=True).SerializeToString()
    body_path = str(tmp_path / "range.bin")
    with open(body_path, "wb") as f:
        f.write(b"\0" + struct.pack(">I", len(request)) + request)

    servers = {}
    for name, flags in (("plain", []), ("metrics", ["--metrics"])):
        port = free_port()
        proc = procs.start(name, [sys.executable, "-m", "tests.integration.monitoring.noop_server", str(port), *flags])
        wait_until(lambda: port_open(port), 20, f"{name} server")
        assert asyncio.run(grpc_status_ok(port))  # h2load only sees HTTP status
        servers[name] = (port, proc.pid)

    rates = {name: [] for name in servers}
    cpu_per_call = {name: [] for name in servers}
    for _ in range(ROUNDS):
        for name, (port, pid) in servers.items():
            before = cpu_seconds(pid)
            rates[name].append(h2load(port, body_path))
            cpu_per_call[name].append((cpu_seconds(pid) - before) / REQUESTS)

    rate = {name: statistics.median(r) for name, r in rates.items()}
    cpu = {name: statistics.median(c) for name, c in cpu_per_call.items()}
    print(f"\nreq/s per round: {rates}\nmedian req/s: {rate}, ratio {rate['metrics'] / rate['plain']:.3f}"
          f"\nmedian server CPU per call: plain {cpu['plain'] * 1e6:.0f} us, metrics {cpu['metrics'] * 1e6:.0f} us,"
          f" ratio {cpu['plain'] / cpu['metrics']:.3f}")
    assert rate["metrics"] >= 0.8 * rate["plain"]
