"""Helpers for the proxy watch/lease tests: an in-process proxy, etcd metrics, watch clients."""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.error
import urllib.request
from typing import AsyncIterator

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from proxy import lease_service, watch_service
from proxy.namespace import Namespace
from proxy.upstream import Upstream
from tests.support.kvstack import ProxySpec, start_kvproxy
from cluster.launch import LOOPBACK, free_port, wait_until


def start_healthy_kvproxy(procs, upstream, name: str = "kvproxy", extra_flags: list[str] | None = None) -> ProxySpec:
    """`kvproxy start` in front of `upstream`, once its /health says the cluster answers it."""
    spec = start_kvproxy(procs, upstream, name=name, extra_flags=extra_flags)
    wait_until(lambda: _healthy(spec.metrics_url), 30, f"{name} /health\n{procs.log_tail(name)}")
    return spec


def _healthy(metrics_url: str) -> bool:
    try:
        return urllib.request.urlopen(metrics_url + "/health", timeout=2).status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.asynccontextmanager
async def in_process_proxy(endpoints: str, namespace: bytes = b"", **watch_options) -> AsyncIterator[str]:
    """A grpc.aio server on a free port serving only our Watch and Lease services (with
    `watch_options` for WatchService) in front of `endpoints`; yields its address."""
    upstream = Upstream(endpoints.split(","))
    server = grpc.aio.server()
    ns = Namespace(namespace)
    watch = watch_service.add_to_server(server, upstream, ns, **watch_options)
    lease = lease_service.add_to_server(server, upstream, ns)
    port = free_port()
    server.add_insecure_port(f"{LOOPBACK}:{port}")
    await server.start()
    try:
        yield f"{LOOPBACK}:{port}"
    finally:
        await server.stop(0)
        await watch.close()
        await lease.close()
        await upstream.close()


def metric_value(metrics_url: str, name: str, labels: str = "") -> float:
    """Sum of the samples of `name` (optionally with a label set substring) on a /metrics page."""
    text = urllib.request.urlopen(metrics_url + "/metrics", timeout=5).read().decode()
    total = 0.0
    found = False
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m and labels in (m.group(1) or ""):
            total += float(m.group(2))
            found = True
    if not found:
        raise KeyError(f"{name} not on {metrics_url}/metrics")
    return total


class WatchClient:
    """One client Watch RPC with an explicit request queue and timed reads."""

    def __init__(self, channel: grpc.aio.Channel, metadata=None):
        self._requests: asyncio.Queue = asyncio.Queue()
        self.call = rpc_pb2_grpc.WatchStub(channel).Watch(self._iter(), metadata=metadata)

    async def _iter(self):
        while True:
            req = await self._requests.get()
            if req is None:
                return
            yield req

    def send(self, req: rpc_pb2.WatchRequest) -> None:
        self._requests.put_nowait(req)

    def create(self, key: bytes, **kw) -> None:
        self.send(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, **kw)))

    def cancel(self, watch_id: int) -> None:
        self.send(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id)))

    def progress(self) -> None:
        self.send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    async def read(self, timeout: float = 5.0) -> rpc_pb2.WatchResponse:
        resp = await asyncio.wait_for(self.call.read(), timeout)
        assert resp is not grpc.aio.EOF, "watch stream ended"
        return resp

    async def created(self, timeout: float = 5.0) -> rpc_pb2.WatchResponse:
        resp = await self.read(timeout)
        assert resp.created, resp
        return resp

    async def events(self, count: int, timeout: float = 10.0) -> list:
        """Read responses until `count` events have arrived; returns the events."""
        out = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < count:
            resp = await self.read(max(0.01, deadline - loop.time()))
            assert not resp.canceled, resp
            out.extend(resp.events)
        return out

    def close(self) -> None:
        self.call.cancel()
