"""Fixtures and helpers for the proxy's integration tests: a kvproxy in front of real etcd 3.4.23,
metrics scraping (ours and etcd's), gRPC clients, and h2load runs."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import urllib.request
from dataclasses import dataclass

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.launch import ClusterSpec
from tests.support.kvstack import ProxySpec, start_kvproxy
from cluster.launch import wait_until

H2LOAD = shutil.which("h2load") or "/usr/bin/h2load"


@pytest.fixture
def proxy1(procs, etcd1) -> ProxySpec:
    """kvproxy in front of a one-member etcd 3.4.23, its read cache coherent (watch established)."""
    proxy = start_kvproxy(procs, etcd1)
    wait_until(lambda: metric(proxy.metrics_url, "kvproxy_cache_coherent") == 1, 10, "the cache's watch")
    return proxy


def scrape(metrics_url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page: {(name, sorted label items): value}."""
    with urllib.request.urlopen(metrics_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(metrics_url: str, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape(metrics_url).items() if n == name and want <= set(ls))


def etcd_ranges_handled(spec: ClusterSpec) -> float:
    """Range calls the cluster handled, counted by etcd itself, summed over members."""
    total = 0.0
    for m in spec.members:
        try:
            total += metric(m.metrics_url, "grpc_server_handled_total", grpc_method="Range")
        except OSError:
            pass  # a killed member
    return total


def kv_stub(port: int) -> tuple[grpc.Channel, rpc_pb2_grpc.KVStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, rpc_pb2_grpc.KVStub(channel)


def grpc_body(message) -> bytes:
    """A unary gRPC request body: 5-byte prefix + the serialized message."""
    data = message.SerializeToString()
    return b"\0" + struct.pack(">I", len(data)) + data


@dataclass
class H2LoadResult:
    succeeded: int
    failed: int
    errored: int
    data_bytes: int
    req_per_s: float
    output: str


def run_h2load(tmp_path, port: int, path: str, message, n: int, clients: int = 100, streams: int = 10,
               threads: int = 1, timeout: float = 300) -> H2LoadResult:
    body = tmp_path / f"body-{port}-{n}.bin"
    body.write_bytes(grpc_body(message))
    out = subprocess.run(
        [H2LOAD, "-n", str(n), "-c", str(clients), "-m", str(streams), "-t", str(threads), "-d", str(body),
         "-H", "content-type:application/grpc", "-H", "te:trailers", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=timeout).stdout
    reqs = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    traffic = re.search(r"traffic: .* \((\d+)\) data", out)
    rate = re.search(r"finished in .*?, ([\d.]+) req/s", out)
    assert reqs and traffic and rate, out
    return H2LoadResult(int(reqs.group(1)), int(reqs.group(2)), int(reqs.group(3)), int(traffic.group(1)),
                        float(rate.group(1)), out)


def grpc_reply_size(response) -> int:
    """Bytes of DATA a gRPC reply carrying `response` takes (prefix + message)."""
    return 5 + len(response.SerializeToString())


def put(port: int, key: bytes, value: bytes) -> rpc_pb2.PutResponse:
    channel, kv = kv_stub(port)
    with channel:
        return kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
