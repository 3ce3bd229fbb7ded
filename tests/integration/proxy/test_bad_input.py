"""Bad input through kvproxy: garbage, unknown methods, and clients that never read their answers."""

from __future__ import annotations

import socket
import struct
import threading
import time

import grpc
import pytest

from cluster.launch import wait_until

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.kvstack import start_kvproxy

from .conftest import kv_stub, metric, put


def raw_call(port: int, path: str, body: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(path, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(body, timeout=5)
        return err.value


@pytest.mark.parametrize("path", ["/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/Txn",
                                  "/etcdserverpb.KV/DeleteRange", "/etcdserverpb.KV/Compact"])
def test_garbage_request_gets_etcds_status(proxy1, etcd1, path):
    garbage = b"\xff\xff\xff\xff"
    ours = raw_call(proxy1.port, path, garbage)
    theirs = raw_call(etcd1.members[0].client_port, path, garbage)
    assert ours.code() == theirs.code() == grpc.StatusCode.INTERNAL
    assert ours.details().startswith("grpc: error unmarshalling request")


@pytest.mark.parametrize("path", ["/etcdserverpb.KV/NoSuchMethod", "/no.such.Service/Method"])
def test_unknown_methods_are_unimplemented(proxy1, etcd1, path):
    assert raw_call(proxy1.port, path, b"").code() == grpc.StatusCode.UNIMPLEMENTED
    assert raw_call(etcd1.members[0].client_port, path, b"").code() == grpc.StatusCode.UNIMPLEMENTED


def test_invalid_requests_get_the_clusters_error_unchanged(proxy1, etcd1):
    for req in (rpc_pb2.RangeRequest(key=b""), rpc_pb2.RangeRequest(key=b"", serializable=True)):
        ours = raw_call(proxy1.port, "/etcdserverpb.KV/Range", req.SerializeToString())
        theirs = raw_call(etcd1.members[0].client_port, "/etcdserverpb.KV/Range", req.SerializeToString())
        assert (ours.code(), ours.details()) == (theirs.code(), theirs.details()) == \
               (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")


# --- a client that opens thousands of streams and never reads them -------------------------------

def _frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def _literal(name: str, value: str) -> bytes:
    # HPACK "literal header field without indexing, new name"; lengths < 127 (no Huffman).
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


class NeverReadingClient:
    """An HTTP/2 client that advertises a zero flow-control window and never raises it: the
    server can send it headers but no answer data, so every answer stays queued for it. It acks
    SETTINGS and PINGs (so the connection stays up) and opens `streams` unary Range calls."""

    def __init__(self, port: int, streams: int, request: bytes):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.closed = False
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" +
                          _frame(4, 0, 0, struct.pack(">HI", 4, 0) + struct.pack(">HI", 3, 100000)))
        threading.Thread(target=self._ack_loop, daemon=True).start()
        headers = b"".join(_literal(k, v) for k, v in (
            (":method", "POST"), (":scheme", "http"), (":path", "/etcdserverpb.KV/Range"),
            (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"), ("te", "trailers")))
        body = b"\0" + struct.pack(">I", len(request)) + request
        out = []
        for i in range(streams):
            sid = 1 + 2 * i
            out.append(_frame(1, 0x4, sid, headers) + _frame(0, 0x1, sid, body))
        self.sock.sendall(b"".join(out))

    def _ack_loop(self):
        buf = b""
        try:
            while not self.closed:
                data = self.sock.recv(65536)
                if not data:
                    return
                buf += data
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    ftype, flags, payload = buf[3], buf[4], buf[9:9 + length]
                    buf = buf[9 + length:]
                    if ftype == 4 and not flags & 1:
                        self.sock.sendall(_frame(4, 1, 0, b""))
                    elif ftype == 6 and not flags & 1:
                        self.sock.sendall(_frame(6, 1, 0, payload))
        except OSError:
            return

    def close(self):
        self.closed = True
        self.sock.close()


def _latencies(kv, req, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.monotonic()
        kv.Range(req, timeout=10)
        out.append(time.monotonic() - t)
    return sorted(out)


def test_clients_that_never_read_do_not_hurt_others(proxy1, etcd1):
    put(etcd1.members[0].client_port, b"big", b"x" * 4096)
    req = rpc_pb2.RangeRequest(key=b"big", serializable=True)
    channel, kv = kv_stub(proxy1.port)
    with channel:
        kv.Range(req, timeout=5)
        before = _latencies(kv, req, 200)
        handled0 = metric(proxy1.metrics_url, "grpc_server_handled_total", grpc_method="Range")
        abusers = []
        try:
            # 4 connections x 1,000 calls, each answered into a zero window and left unread. One
            # connection at a time: grpc refuses (RESOURCE_EXHAUSTED) calls arriving faster than
            # the server takes them (its pending-request queue), and we want all 4,000 held.
            for i in range(1, 5):
                abusers.append(NeverReadingClient(proxy1.port, 1000, req.SerializeToString()))
                wait_until(lambda: metric(proxy1.metrics_url, "grpc_server_handled_total", grpc_method="Range")
                           >= handled0 + 1000 * i, 30, f"abuser {i}'s calls to be answered")
            during = _latencies(kv, req, 200)
        finally:
            for a in abusers:
                a.close()
        after = _latencies(kv, req, 50)
    p99 = lambda xs: xs[int(len(xs) * 0.99) - 1]  # noqa: E731
    print(f"\nRange latency p50/p99 ms: before {before[100]*1e3:.2f}/{p99(before)*1e3:.2f}, "
          f"with 4,000 unread streams {during[100]*1e3:.2f}/{p99(during)*1e3:.2f}, "
          f"after {after[25]*1e3:.2f}/{p99(after)*1e3:.2f}")
    assert p99(during) < 0.1
    assert during[100] < before[100] * 5 + 0.005


def test_message_size_limits_are_enforced_both_ways(procs, etcd1):
    """--max-recv-bytes bounds what clients may send through the proxy, --max-send-bytes /
    --max-recv-bytes bound what crosses to and from the cluster; the proxy keeps serving."""
    limited = start_kvproxy(procs, etcd1, name="kvproxy-limited",
                            extra_flags=["--max-recv-bytes", "4096", "--max-send-bytes", "4096"])
    big = b"v" * 16384
    with grpc.insecure_channel(limited.listen_addr) as ch, \
            grpc.insecure_channel(etcd1.members[0].endpoint) as direct:
        through, upstream = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.KVStub(direct)
        with pytest.raises(grpc.RpcError) as err:
            through.Put(rpc_pb2.PutRequest(key=b"limits/big", value=big), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        upstream.Put(rpc_pb2.PutRequest(key=b"limits/big", value=big), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            through.Range(rpc_pb2.RangeRequest(key=b"limits/big"), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        through.Put(rpc_pb2.PutRequest(key=b"limits/small", value=b"ok"), timeout=10)
        got = through.Range(rpc_pb2.RangeRequest(key=b"limits/small"), timeout=10)
        assert [kv.value for kv in got.kvs] == [b"ok"]
