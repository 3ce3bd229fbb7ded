"""KeepAliveMerger: one upstream LeaseKeepAlive stream per identity, shared by every client lease.

Contract (truthful TTLs, no 2xTTL life as in etcd's grpc-proxy, etcd#13031):
- `keep_alive(identity, lease_id)` returns the upstream's own LeaseKeepAliveResponse (its TTL, its
  header) for a keepalive of `lease_id` that was *sent upstream after this call began*. The proxy
  never answers from a cache and never sends a keepalive on its own, so a lease lives at most TTL
  after the last keepalive a client sent (plus the time that keepalive took to reach the cluster).
- Coalescing: while a keepalive for lease L is in flight upstream, every new caller for L waits
  for the *next* one, sent as soon as the in-flight one is answered; all of them share its answer.
  So N concurrent client keepalives for L cost at most 2 upstream keepalives, never fewer than
  correctness allows.
- etcd answers keepalives in order on a stream, one response per request; requests for different
  leases share the stream. When the stream breaks, the callers whose keepalive was in flight or
  waiting send it again on a new stream (the channel fails over to another member), up to
  `ATTEMPTS` times; then they get `KeepAliveUnavailable` with the upstream's status.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from protos.etcdserverpb import rpc_pb2

from ..upstream import Upstream
from .lease_metrics import CLIENT_KEEPALIVES, UPSTREAM_KEEPALIVE_STREAMS, UPSTREAM_KEEPALIVES

log = logging.getLogger("kvproxy.lease")

Identity = tuple[tuple[str, str], ...]
ATTEMPTS = 3
RETRY_PAUSE_S = 0.2


class KeepAliveUnavailable(Exception):
    """The upstream keepalive stream broke before this keepalive was answered."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code = code
        self.details = details


class _LeaseState:
    __slots__ = ("in_flight", "next")

    def __init__(self):
        self.in_flight: asyncio.Future | None = None   # answered by the keepalive sent upstream
        self.next: asyncio.Future | None = None        # callers that arrived while one was in flight


class UpstreamKeepAliveStream:
    """One upstream LeaseKeepAlive RPC carrying the keepalives of every lease of one identity."""

    def __init__(self, upstream: Upstream, identity: Identity):
        self._upstream = upstream
        self._identity = identity
        self._leases: dict[int, _LeaseState] = {}
        self._outbox: asyncio.Queue[int] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.users = 0

    async def keep_alive(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        """The upstream's answer to a keepalive of `lease_id` sent after this call began."""
        CLIENT_KEEPALIVES.inc()
        for attempt in range(ATTEMPTS):
            try:
                return await self._keep_alive_once(lease_id)
            except KeepAliveUnavailable as e:
                if attempt == ATTEMPTS - 1 or e.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(RETRY_PAUSE_S)
        raise AssertionError("unreachable")

    async def _keep_alive_once(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        state = self._leases.get(lease_id)
        if state is None:
            state = self._leases[lease_id] = _LeaseState()
        loop = asyncio.get_running_loop()
        if state.in_flight is None:
            state.in_flight = fut = loop.create_future()
            self._send(lease_id)
        else:
            if state.next is None:
                state.next = loop.create_future()
            fut = state.next
        return await asyncio.shield(fut)

    def _send(self, lease_id: int) -> None:
        self._ensure_running()
        UPSTREAM_KEEPALIVES.inc()
        self._outbox.put_nowait(lease_id)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        UPSTREAM_KEEPALIVE_STREAMS.inc()
        call = self._upstream.lease.LeaseKeepAlive(metadata=self._identity or None)
        writer = asyncio.get_running_loop().create_task(self._write(call))
        error: KeepAliveUnavailable | None = None
        try:
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    error = KeepAliveUnavailable(grpc.StatusCode.UNAVAILABLE, "upstream closed the keepalive stream")
                    return
                self._answer(resp)
        except grpc.aio.AioRpcError as e:
            error = KeepAliveUnavailable(e.code(), e.details() or "")
        finally:
            writer.cancel()
            call.cancel()
            UPSTREAM_KEEPALIVE_STREAMS.dec()
            self._fail_all(error or KeepAliveUnavailable(grpc.StatusCode.UNAVAILABLE, "keepalive stream closed"))

    async def _write(self, call) -> None:
        try:
            while True:
                lease_id = await self._outbox.get()
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError):
            pass  # the reader sees why the call ended

    def _answer(self, resp: rpc_pb2.LeaseKeepAliveResponse) -> None:
        # At most one keepalive per lease is in flight, so the response's ID names its request.
        state = self._leases.get(resp.ID)
        if state is None or state.in_flight is None:
            return
        if not state.in_flight.done():
            state.in_flight.set_result(resp)
        if state.next is not None:
            state.in_flight, state.next = state.next, None
            self._send(resp.ID)
        else:
            del self._leases[resp.ID]

    def _fail_all(self, error: KeepAliveUnavailable) -> None:
        leases, self._leases = self._leases, {}
        self._outbox = asyncio.Queue()
        for state in leases.values():
            for fut in (state.in_flight, state.next):
                if fut is not None and not fut.done():
                    fut.set_exception(error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


class KeepAliveMerger:
    """All client keepalives of this proxy process, merged onto one upstream stream per identity."""

    def __init__(self, upstream: Upstream):
        self._upstream = upstream
        self._streams: dict[Identity, UpstreamKeepAliveStream] = {}

    def acquire(self, identity: Identity) -> UpstreamKeepAliveStream:
        """The identity's shared stream; call `release` when the client stream ends."""
        stream = self._streams.get(identity)
        if stream is None:
            stream = self._streams[identity] = UpstreamKeepAliveStream(self._upstream, identity)
        stream.users += 1
        return stream

    async def release(self, identity: Identity) -> None:
        stream = self._streams.get(identity)
        if stream is None:
            return
        stream.users -= 1
        if stream.users <= 0:
            del self._streams[identity]
            await stream.close()

    async def close(self) -> None:
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            await stream.close()
