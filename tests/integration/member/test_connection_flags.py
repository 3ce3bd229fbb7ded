"""Client-connection flags side by side with etcd 3.4.23:
- --grpc-keepalive-min-time: a client that pings every second on an idle Watch stream is cut off
  (GOAWAY "too_many_pings") under the default 5 s minimum, and left alone when the member allows
  pings every 500 ms; on kvproxy too (etcd 3.5's grpc-proxy flag);
- --max-concurrent-streams: with 2, a connection holding two Watch streams gets no third stream
  (a Range waits) until one ends; on kvproxy too (etcd grpc-proxy's flag)."""

from __future__ import annotations

import queue
import threading
import time

import grpc

from cluster.launch import ClusterSpec, port_open, wait_until
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.etcd_ref import start_etcd_cluster
from tests.support.kvstack import start_kv_cluster, start_kvproxy

PINGING_CLIENT = [("grpc.keepalive_time_ms", 1000), ("grpc.keepalive_timeout_ms", 5000),
                  ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)]


class IdleWatch:
    """A Watch stream (on `channel`, or on a new pinging channel): created, then nothing to
    deliver; `error` is set if the stream breaks."""

    def __init__(self, endpoint: str, channel: grpc.Channel | None = None):
        self.channel = channel or grpc.insecure_channel(endpoint, options=PINGING_CLIENT)
        self.requests: queue.Queue = queue.Queue()
        self.created = threading.Event()
        self.error: grpc.RpcError | None = None
        self.requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"idle")))
        self.call = rpc_pb2_grpc.WatchStub(self.channel).Watch(self._requests())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _requests(self):
        while (req := self.requests.get()) is not None:
            yield req

    def _run(self):
        try:
            for resp in self.call:
                if resp.created:
                    self.created.set()
        except grpc.RpcError as exc:
            self.error = exc

    def close(self):
        self.requests.put(None)
        self.channel.close()


def test_keepalive_min_time_as_etcd(procs, tmp_path):
    stacks = {}
    for kind, start in (("etcd", start_etcd_cluster), ("kv", start_kv_cluster)):
        for min_time in ("default", "500ms"):
            flags = [] if min_time == "default" else ["--grpc-keepalive-min-time", min_time]
            spec = ClusterSpec.allocate(str(tmp_path / f"{kind}-{min_time}"), 1, flags)
            start(procs, spec)
            wait_until(lambda s=spec: port_open(s.members[0].client_port), 30, f"{kind} {min_time}")
            stacks[kind, min_time] = spec.members[0].endpoint
            if kind == "kv":
                proxy = start_kvproxy(procs, spec, name=f"kvproxy-{min_time}", extra_flags=flags)
                stacks["kvproxy", min_time] = proxy.listen_addr
    watches = {key: IdleWatch(endpoint) for key, endpoint in stacks.items()}
    try:
        for key, w in watches.items():
            assert w.created.wait(15), key
        # pings every second: the third one beyond the allowed rate ends the connection
        deadline = time.monotonic() + 10
        kinds = ("etcd", "kv", "kvproxy")
        while time.monotonic() < deadline and any(watches[k, "default"].error is None for k in kinds):
            time.sleep(0.2)
        for kind in kinds:
            cut, allowed = watches[kind, "default"], watches[kind, "500ms"]
            assert cut.error is not None and cut.error.code() == grpc.StatusCode.UNAVAILABLE, kind
            assert allowed.error is None, (kind, allowed.error)
            assert allowed.thread.is_alive(), kind
    finally:
        for w in watches.values():
            w.close()


def test_max_concurrent_streams_as_etcd(procs, tmp_path):
    endpoints = {}
    for kind, start in (("etcd", start_etcd_cluster), ("kv", start_kv_cluster)):
        spec = ClusterSpec.allocate(str(tmp_path / kind), 1, ["--max-concurrent-streams", "2"])
        start(procs, spec)
        endpoints[kind] = spec.members[0].endpoint
    upstream = ClusterSpec.allocate(str(tmp_path / "upstream"), 1)
    start_kv_cluster(procs, upstream)
    proxy = start_kvproxy(procs, upstream, extra_flags=["--max-concurrent-streams", "2"])
    endpoints["kvproxy"] = proxy.listen_addr
    range_req = rpc_pb2.RangeRequest(key=b"k")
    for kind, endpoint in endpoints.items():
        with grpc.insecure_channel(endpoint) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            kv.Range(range_req, timeout=10)
            watches = [IdleWatch(endpoint, channel) for _ in range(2)]
            for w in watches:
                assert w.created.wait(15), kind
            try:
                kv.Range(range_req, timeout=1.5)
                raise AssertionError(f"{kind}: a third stream was opened beside two watches")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (kind, exc)
            watches[0].call.cancel()  # RST_STREAM: the connection has a free stream again
            kv.Range(range_req, timeout=10)
            for w in watches:
                w.close()
