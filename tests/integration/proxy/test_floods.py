"""Hot-key floods through kvproxy in front of etcd 3.4.23, counted by etcd's own metrics."""

from __future__ import annotations

import asyncio
import bisect
import threading
import time

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from .conftest import etcd_ranges_handled, grpc_reply_size, kv_stub, metric, put, run_h2load

FLOOD = 20_000


def test_serializable_flood_is_absorbed_by_the_cache(proxy1, etcd1, tmp_path):
    put(etcd1.members[0].client_port, b"foo", b"v" * 256)
    request = rpc_pb2.RangeRequest(key=b"foo", serializable=True)
    channel, kv = kv_stub(proxy1.port)
    with channel:
        sample = kv.Range(request, timeout=10)
    assert sample.kvs[0].value == b"v" * 256
    before = etcd_ranges_handled(etcd1)

    result = run_h2load(tmp_path, proxy1.port, "/etcdserverpb.KV/Range", request, FLOOD)

    upstream = etcd_ranges_handled(etcd1) - before
    assert result.succeeded == FLOOD, result.output
    # Every reply is the full answer (a gRPC error would be a trailers-only reply with no DATA).
    assert result.data_bytes == FLOOD * grpc_reply_size(sample), result.output
    assert upstream <= 40, f"{upstream} upstream Ranges for {FLOOD} serializable reads"
    hits = metric(proxy1.metrics_url, "etcd_grpc_proxy_cache_hits_total")
    assert hits >= FLOOD - 40


def test_linearizable_flood_is_coalesced_and_stays_linearizable(proxy1, etcd1, tmp_path):
    """h2load floods linearizable Gets of `counter` while a writer (straight to etcd) increments it
    and grpc readers (through the proxy, same request) check that no read returns a value older
    than one acknowledged before the read began."""
    direct = etcd1.members[0].client_port
    put(direct, b"counter", b"0")
    request = rpc_pb2.RangeRequest(key=b"counter")
    before = etcd_ranges_handled(etcd1)
    flood_done = threading.Event()
    results = {}

    def flood():
        try:
            results["h2load"] = run_h2load(tmp_path, proxy1.port, "/etcdserverpb.KV/Range", request, FLOOD)
        finally:
            flood_done.set()

    flooder = threading.Thread(target=flood)
    flooder.start()
    acks, reads = asyncio.run(_write_and_read_until(flood_done, direct, proxy1.port, request))
    flooder.join()

    upstream = etcd_ranges_handled(etcd1) - before
    h2 = results["h2load"]
    assert h2.succeeded == FLOOD, h2.output
    assert upstream <= 1000, f"{upstream} upstream Ranges for {FLOOD + len(reads)} linearizable reads"
    assert len(acks) > 10 and len(reads) > 100
    # acks: (ack time, value) in increasing value order; reads: (start, end, value).
    violations = [(s, e, v) for s, e, v in reads if v < _last_acked_before(acks, s)]
    assert not violations, violations[:5]
    assert metric(proxy1.metrics_url, "kvproxy_coalesced_reads_total", kind="linearizable") > FLOOD / 2


def _last_acked_before(acks: list[tuple[float, int]], start: float) -> int:
    """The value of the last write acknowledged before `start` (acks are in time order)."""
    i = bisect.bisect_left(acks, (start,)) - 1
    return acks[i][1] if i >= 0 else 0


async def _write_and_read_until(done: threading.Event, direct_port: int, proxy_port: int, request):
    acks: list[tuple[float, int]] = []
    reads: list[tuple[float, float, int]] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{direct_port}") as wch, \
            grpc.aio.insecure_channel(f"127.0.0.1:{proxy_port}") as rch:
        writer_kv, reader_kv = rpc_pb2_grpc.KVStub(wch), rpc_pb2_grpc.KVStub(rch)

        async def writer():
            i = 0
            while not done.is_set():
                i += 1
                await writer_kv.Put(rpc_pb2.PutRequest(key=b"counter", value=str(i).encode()), timeout=10)
                acks.append((time.monotonic(), i))

        async def reader():
            while not done.is_set():
                start = time.monotonic()
                resp = await reader_kv.Range(request, timeout=10)
                reads.append((start, time.monotonic(), int(resp.kvs[0].value)))

        await asyncio.gather(writer(), *(reader() for _ in range(8)))
    return acks, reads

