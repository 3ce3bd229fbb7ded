"""GrpcServerMetrics + MetricsHTTPServer on a real grpc.aio server, scraped over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json

import grpc
import grpc.aio
import pytest
from prometheus_client import CollectorRegistry, Counter, GCCollector, PlatformCollector, ProcessCollector

from cluster.grpc_wrapping import WrappingServer
from monitoring.grpc_metrics import GrpcServerMetrics
from monitoring.http import MetricsHTTPServer
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.integration.monitoring.scraping import Scrape, http_get, promtool_problems, scrape, scrape_until

KV, WATCH, LEASE, MAINT = "etcdserverpb.KV", "etcdserverpb.Watch", "etcdserverpb.Lease", "etcdserverpb.Maintenance"


class FakeKV(rpc_pb2_grpc.KVServicer):
    """One method per way a unary call can end."""

    async def Range(self, request, context):
        return rpc_pb2.RangeResponse(count=1)

    async def Put(self, request, context):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")

    async def DeleteRange(self, request, context):
        raise RuntimeError("a bug in the handler")

    async def Compact(self, request, context):
        context.set_code(grpc.StatusCode.NOT_FOUND)
        return rpc_pb2.CompactionResponse()

    async def Txn(self, request, context):
        await asyncio.Event().wait()  # until the client's deadline passes


class EchoWatch(rpc_pb2_grpc.WatchServicer):
    """Bidi stream as an async generator: one response per request."""

    async def Watch(self, request_iterator, context):
        async for request in request_iterator:
            yield rpc_pb2.WatchResponse(watch_id=request.create_request.watch_id)


class EchoLease(rpc_pb2_grpc.LeaseServicer):
    """Bidi stream in read/write style."""

    async def LeaseKeepAlive(self, request_iterator, context):
        while (request := await context.read()) is not grpc.aio.EOF:
            await context.write(rpc_pb2.LeaseKeepAliveResponse(ID=request.ID, TTL=5))


class ChunkedSnapshot(rpc_pb2_grpc.MaintenanceServicer):
    """Server stream: three chunks."""

    async def Snapshot(self, request, context):
        for remaining in (2, 1, 0):
            yield rpc_pb2.SnapshotResponse(remaining_bytes=remaining, blob=b"x")


async def count_messages(request_iterator, context) -> bytes:
    """Client stream (raw bytes): answers how many messages it got."""
    return str(len([m async for m in request_iterator])).encode()


async def endless(request: bytes, context):
    """Server stream (raw bytes) that never ends by itself, and never awaits but to yield."""
    while True:
        yield request


RAW_STREAMS = grpc.method_handlers_generic_handler("test.Streams", {
    "Count": grpc.stream_unary_rpc_method_handler(count_messages),
    "Endless": grpc.unary_stream_rpc_method_handler(endless),
})


@contextlib.asynccontextmanager
async def serving(registry: CollectorRegistry, health=None, routes=None):
    """A grpc.aio server whose handlers GrpcServerMetrics wraps, and a metrics server; yields
    (channel, metrics port)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    registering = WrappingServer(server, [GrpcServerMetrics(registry).wrap])
    rpc_pb2_grpc.add_KVServicer_to_server(FakeKV(), registering)
    rpc_pb2_grpc.add_WatchServicer_to_server(EchoWatch(), registering)
    rpc_pb2_grpc.add_LeaseServicer_to_server(EchoLease(), registering)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(ChunkedSnapshot(), registering)
    registering.add_generic_rpc_handlers([RAW_STREAMS])
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    metrics = MetricsHTTPServer(registry, health=health, routes=routes)
    await metrics.start(["http://127.0.0.1:0"])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            yield channel, metrics.ports[0]
    finally:
        await metrics.stop()
        await server.stop(None)


async def expect_code(call, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code


async def make_calls(channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    for _ in range(3):
        await kv.Range(rpc_pb2.RangeRequest(key=b"foo"))
    await expect_code(kv.Put(rpc_pb2.PutRequest()), grpc.StatusCode.INVALID_ARGUMENT)
    await expect_code(kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"a")), grpc.StatusCode.UNKNOWN)
    await expect_code(kv.Compact(rpc_pb2.CompactionRequest()), grpc.StatusCode.NOT_FOUND)
    await expect_code(kv.Txn(rpc_pb2.TxnRequest(), timeout=0.2), grpc.StatusCode.DEADLINE_EXCEEDED)
    unknown = channel.unary_unary(f"/{KV}/NoSuchMethod")
    await expect_code(unknown(b""), grpc.StatusCode.UNIMPLEMENTED)

    # Bidi (async generator): one stream of 3 messages that ends OK, one cancelled after 2.
    watch = rpc_pb2_grpc.WatchStub(channel)
    stream = watch.Watch()
    for i in range(3):
        await stream.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(watch_id=i)))
        assert (await stream.read()).watch_id == i
    await stream.done_writing()
    assert await stream.read() is grpc.aio.EOF
    assert await stream.code() == grpc.StatusCode.OK
    stream = watch.Watch()
    for i in range(2):
        await stream.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(watch_id=i)))
        await stream.read()
    stream.cancel()

    # Bidi (read/write style): 2 messages each way, then the client half-closes.
    keepalive = rpc_pb2_grpc.LeaseStub(channel).LeaseKeepAlive()
    for lease_id in (7, 8):
        await keepalive.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
        assert (await keepalive.read()).ID == lease_id
    await keepalive.done_writing()
    assert await keepalive.code() == grpc.StatusCode.OK

    chunks = [c async for c in rpc_pb2_grpc.MaintenanceStub(channel).Snapshot(rpc_pb2.SnapshotRequest())]
    assert [c.remaining_bytes for c in chunks] == [2, 1, 0]

    async def four_messages():
        for _ in range(4):
            yield b"m"
    assert await channel.stream_unary("/test.Streams/Count")(four_messages()) == b"4"

    # A server stream cancelled while grpc.aio, not the handler, is busy writing.
    endless_stream = channel.unary_stream("/test.Streams/Endless")(b"e")
    for _ in range(3):
        assert await endless_stream.read() == b"e"
    endless_stream.cancel()


def test_counts_codes_and_messages_as_go_grpc_prometheus():
    async def scenario():
        registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        async with serving(registry) as (channel, port):
            await make_calls(channel)
            # The cancelled stream is reported by the server after the client has moved on.
            return await scrape_until(
                port, lambda s: s.value("grpc_server_handled_total", grpc_code="Canceled", grpc_method="Watch",
                                        grpc_service=WATCH, grpc_type="bidi_stream")
                and s.value("grpc_server_handled_total", grpc_code="Canceled", grpc_method="Endless",
                            grpc_service="test.Streams", grpc_type="server_stream"),
                what="the cancelled streams to be handled")

    s = asyncio.run(scenario())

    def labels(method, service=KV, grpc_type="unary"):
        return dict(grpc_method=method, grpc_service=service, grpc_type=grpc_type)

    handled = {(d["grpc_method"], d["grpc_code"]): s.value("grpc_server_handled_total", **d)
               for d in s.names_with("grpc_server_handled_total")}
    # At its deadline the client also cancels the call: whichever the server sees first wins,
    # in grpc-go as here.
    txn_code = "Canceled" if ("Txn", "Canceled") in handled else "DeadlineExceeded"
    assert handled == {
        ("Range", "OK"): 3, ("Put", "InvalidArgument"): 1, ("DeleteRange", "Unknown"): 1,
        ("Compact", "NotFound"): 1, ("Txn", txn_code): 1,
        ("Watch", "OK"): 1, ("Watch", "Canceled"): 1, ("LeaseKeepAlive", "OK"): 1, ("Snapshot", "OK"): 1,
        ("Count", "OK"): 1, ("Endless", "Canceled"): 1,
    }
    expected = {  # method: (type, service, started, received, sent)
        "Range": ("unary", KV, 3, 3, 3), "Put": ("unary", KV, 1, 1, 0),
        "DeleteRange": ("unary", KV, 1, 1, 0), "Compact": ("unary", KV, 1, 1, 0),
        "Txn": ("unary", KV, 1, 1, 0),
        "Watch": ("bidi_stream", WATCH, 2, 5, 5), "LeaseKeepAlive": ("bidi_stream", LEASE, 1, 2, 2),
        "Snapshot": ("server_stream", MAINT, 1, 1, 3), "Count": ("client_stream", "test.Streams", 1, 4, 1),
    }
    for method, (grpc_type, service, started, received, sent) in expected.items():
        ls = labels(method, service, grpc_type)
        assert (s.value("grpc_server_started_total", **ls), s.value("grpc_server_msg_received_total", **ls),
                s.value("grpc_server_msg_sent_total", **ls)) == (started, received, sent), method
        assert s.value("grpc_server_handling_seconds_count", **ls) == started, method
        assert s.value("grpc_server_handling_seconds_bucket", **ls, le="+Inf") == started, method
    assert s.names_with("grpc_server_started_total", grpc_method="NoSuchMethod") == []
    endless_labels = labels("Endless", "test.Streams", "server_stream")
    assert s.value("grpc_server_msg_received_total", **endless_labels) == 1
    assert s.value("grpc_server_msg_sent_total", **endless_labels) >= 3  # what grpc.aio wrote

    # The deadline-bound Txn took about its 0.2 s timeout (the server's clock starts later).
    txn = labels("Txn")
    assert s.value("grpc_server_handling_seconds_bucket", **txn, le="0.1") == 0
    assert s.value("grpc_server_handling_seconds_bucket", **txn, le="10") == 1
    assert 0.1 <= s.value("grpc_server_handling_seconds_sum", **txn) < 10
    le_names = [d["le"] for d in s.names_with("grpc_server_handling_seconds_bucket", **labels("Range"))]
    assert le_names == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]

    assert "# TYPE grpc_server_handled_total counter" in s.text
    assert "# TYPE grpc_server_handling_seconds histogram" in s.text
    assert "process_cpu_seconds" in s.families and "python_info" in s.families
    assert promtool_problems(s.text) == ""


def test_health_routes_404_and_keepalive():
    state = {"ok": True}

    async def health():
        return state["ok"], "no leader"

    async def proxy_health():
        return 200, "application/json", b'{"health":"true","reason":""}'

    def requests(port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answers, sockets = [], set()
        for method, path in (("GET", "/health"), ("GET", "/metrics"), ("GET", "/proxy/health"),
                             ("GET", "/nope"), ("POST", "/health")):
            conn.request(method, path)
            r = conn.getresponse()
            answers.append((r.status, r.getheader("Content-Type"), r.read()))
            sockets.add(conn.sock)  # None once the server has asked to close
        conn.close()
        assert len(sockets) == 1 and None not in sockets  # one connection throughout: keep-alive
        state["ok"] = False
        answers.append(http_get(port, "/health"))
        answers.append(http_get(port, "/metrics"))
        return answers

    async def scenario():
        registry = CollectorRegistry()
        Counter("kvproxy_test_reads", "A prometheus_client counter.", registry=registry).inc()
        Counter("etcd_network_snapshot_send_success", "An etcd counter without _total.", ["To"],
                registry=registry).labels("2").inc(3)
        async with serving(registry, health=health, routes={"/proxy/health": proxy_health}) as (_, port):
            return await asyncio.to_thread(requests, port)

    healthy, metrics, proxy, missing, post, unhealthy, final = asyncio.run(scenario())
    assert healthy == (200, "text/plain; charset=utf-8", b'{"health":"true"}')
    assert metrics[0] == 200 and metrics[1].startswith("text/plain; version=0.0.4")
    assert proxy == (200, "application/json", b'{"health":"true","reason":""}')
    assert missing == (404, "text/plain; charset=utf-8", b"404 page not found\n")
    assert post[0] == 405
    status, headers, body = unhealthy
    assert (status, json.loads(body)) == (503, {"health": "false"})
    counts = Scrape(final[2].decode())
    assert counts.value("etcd_server_health_success") == 1
    assert counts.value("etcd_server_health_failures") == 1
    assert counts.value("kvproxy_test_reads_total") == 1
    # etcd's name, without the _total prometheus_client's Counter appends
    assert counts.value("etcd_network_snapshot_send_success", To="2") == 3
    assert "etcd_network_snapshot_send_success_total" not in counts.text
    assert "_created" not in counts.text  # as Go's client: no creation-time series
    assert promtool_problems(counts.text) == ""


def test_openmetrics_when_asked():
    async def scenario():
        async with serving(CollectorRegistry()) as (_, port):
            return await asyncio.to_thread(
                http_get, port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})

    status, headers, body = asyncio.run(scenario())
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")

def test_counts_client_bytes_as_etcd():
    """etcd_network_client_grpc_{received,sent}_bytes_total: the serialized size of every message
    counted above, protobuf or raw bytes, unary and streamed (etcd 3.4.23 counts a Put of key `a`
    value `b` as 6 bytes received)."""
    range_req = rpc_pb2.RangeRequest(key=b"foo")
    put_req = rpc_pb2.PutRequest(key=b"a", value=b"b")
    creates = [rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k", watch_id=i))
               for i in range(1, 3)]
    keepalive_req = rpc_pb2.LeaseKeepAliveRequest(ID=300)

    async def scenario():
        async with serving(CollectorRegistry()) as (channel, port):
            before = await scrape_until(port, lambda s: True)
            kv = rpc_pb2_grpc.KVStub(channel)
            await kv.Range(range_req)
            await expect_code(kv.Put(put_req), grpc.StatusCode.INVALID_ARGUMENT)  # nothing sent
            stream = rpc_pb2_grpc.WatchStub(channel).Watch()
            for request in creates:
                await stream.write(request)
                await stream.read()
            await stream.done_writing()
            assert await stream.code() == grpc.StatusCode.OK
            keepalive = rpc_pb2_grpc.LeaseStub(channel).LeaseKeepAlive()
            await keepalive.write(keepalive_req)
            await keepalive.read()
            await keepalive.done_writing()
            assert await keepalive.code() == grpc.StatusCode.OK

            async def raw_messages():
                for m in (b"abc", b"de"):
                    yield m
            assert await channel.stream_unary("/test.Streams/Count")(raw_messages()) == b"2"
            return before, await scrape(port)

    before, after = asyncio.run(scenario())
    assert before.value("etcd_network_client_grpc_received_bytes_total") == 0
    assert before.value("etcd_network_client_grpc_sent_bytes_total") == 0
    received = (range_req.ByteSize() + put_req.ByteSize() + sum(r.ByteSize() for r in creates)
                + keepalive_req.ByteSize() + len(b"abc") + len(b"de"))
    sent = (rpc_pb2.RangeResponse(count=1).ByteSize()
            + sum(rpc_pb2.WatchResponse(watch_id=i).ByteSize() for i in range(1, 3))
            + rpc_pb2.LeaseKeepAliveResponse(ID=300, TTL=5).ByteSize() + len(b"2"))
    assert put_req.ByteSize() == 6
    assert after.value("etcd_network_client_grpc_received_bytes_total") == received
    assert after.value("etcd_network_client_grpc_sent_bytes_total") == sent
    assert "# TYPE etcd_network_client_grpc_sent_bytes_total counter" in after.text
    assert "# TYPE etcd_network_client_grpc_received_bytes_total counter" in after.text
    assert promtool_problems(after.text) == ""
