"""One upstream Watch RPC per identity, multiplexing every watch the proxy holds for it.

Contracts:
- Each `UpstreamWatch` has an id chosen by the proxy (etcd 3.4 honours client-chosen ids), is
  always opened with prev_kv and fragment (fragments are reassembled here), and tracks
  `next_revision`: every event of its range below it has been handed to its sink, in order, once.
- When the RPC breaks (member killed, stream reset), it is re-opened, through the `Upstream`
  channel that fails over to another endpoint, and every open watch is re-created from its
  `next_revision`; events below it are dropped if the upstream sends them again. So a sink sees no
  gap and no duplicate across failovers. If that revision has been compacted meanwhile, the upstream
  cancels the watch with compact_revision and the sink hears it through `on_canceled`.
- `confirmed_revision()` answers "up to which revision has every *synced* watch of this stream
  delivered all its events?" using upstream progress requests (see its docstring for the caveat
  with etcd < 3.4.24).
- Everything runs on the event loop; sinks are called synchronously from the reader and must not
  block.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from typing import Protocol

import grpc

from protos.etcdserverpb import rpc_pb2

from ..namespace import Namespace
from ..upstream import Upstream
from .watch_events import EventBatch
from .watch_metrics import UPSTREAM_WATCH_RESUMES, UPSTREAM_WATCHES

log = logging.getLogger("kvproxy.watch")

RECONNECT_BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)
_EOF = grpc.aio.EOF


class WatchSink(Protocol):
    """Who hears about one upstream watch. Called on the event loop, in upstream order."""

    def on_created(self, watch: "UpstreamWatch", header: rpc_pb2.ResponseHeader) -> None: ...

    def on_events(self, watch: "UpstreamWatch", batch: EventBatch) -> None: ...

    def on_canceled(self, watch: "UpstreamWatch", header: rpc_pb2.ResponseHeader,
                    compact_revision: int, reason: str) -> None: ...


class UpstreamWatch:
    """One watch held on the cluster. Close it with `UpstreamWatchStream.close_watch`.

    `next_revision`: 0 until the first created response of a watch opened at revision 0 (then
    header.revision + 1); otherwise the lowest revision not yet delivered.
    `synced`: the upstream has nothing older than `next_revision` left to replay, so an upstream
    progress revision also bounds this watch's delivered events. False while the upstream replays
    history (a catch-up or a resumed watch) until an event at or past the creation revision arrives.
    """

    __slots__ = ("watch_id", "key", "range_end", "next_revision", "synced", "created", "kind",
                 "sink", "_fragments", "_sync_at", "_open")

    def __init__(self, watch_id: int, key: bytes, range_end: bytes, start_revision: int,
                 sink: WatchSink, kind: str):
        self.watch_id = watch_id
        self.key = key
        self.range_end = range_end
        self.next_revision = start_revision
        self.synced = False
        self.created = False
        self.kind = kind
        self.sink = sink
        self._fragments: list = []
        self._sync_at = 0
        self._open = True

    @property
    def position(self) -> int:
        """Every event at or below this revision has been delivered (-1: not known yet)."""
        return self.next_revision - 1 if self.next_revision else -1

    def create_request(self) -> rpc_pb2.WatchRequest:
        return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=self.key, range_end=self.range_end, start_revision=self.next_revision,
            prev_kv=True, fragment=True, watch_id=self.watch_id))


class UpstreamWatchStream:
    """The upstream Watch RPC of one identity (its forwarded metadata), re-opened when it breaks."""

    def __init__(self, upstream: Upstream, metadata: tuple[tuple[str, str], ...], namespace: Namespace):
        self._upstream = upstream
        self._metadata = metadata
        self._namespace = namespace
        self._ids = itertools.count(1)
        self._watches: dict[int, UpstreamWatch] = {}
        self._outbox: asyncio.Queue[rpc_pb2.WatchRequest] = asyncio.Queue()
        # Ids of create requests sent and not yet answered, in send order. etcd answers creates in
        # order, and answers a refused one (permission denied) with watch_id -1.
        self._pending_creates: collections.deque[int] = collections.deque()
        self._progress_waiters: list[asyncio.Future] = []
        self._connected = False
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._run())
        self.last_header = rpc_pb2.ResponseHeader()

    # --- watches ------------------------------------------------------------------------------

    def open(self, key: bytes, range_end: bytes, start_revision: int, sink: WatchSink,
             kind: str = "fanout") -> UpstreamWatch:
        """Open a watch on the cluster from `start_revision` (0: from now). Non-blocking."""
        w = UpstreamWatch(next(self._ids), key, range_end, start_revision, sink, kind)
        self._watches[w.watch_id] = w
        UPSTREAM_WATCHES.labels(kind).inc()
        if self._connected:
            self._send_create(w)
        return w

    def _send_create(self, w: UpstreamWatch) -> None:
        self._pending_creates.append(w.watch_id)
        self._outbox.put_nowait(w.create_request())

    def close_watch(self, w: UpstreamWatch) -> None:
        """Stop `w` upstream; its sink hears nothing more."""
        if not w._open:
            return
        w._open = False
        UPSTREAM_WATCHES.labels(w.kind).dec()
        if self._watches.pop(w.watch_id, None) is not None and self._connected:
            self._outbox.put_nowait(rpc_pb2.WatchRequest(
                cancel_request=rpc_pb2.WatchCancelRequest(watch_id=w.watch_id)))

    @property
    def idle(self) -> bool:
        return not self._watches and not self._progress_waiters

    # --- progress -----------------------------------------------------------------------------

    async def confirmed_revision(self) -> int:
        """A revision P such that, when this returns, every watch of this stream that is `synced`
        has had all its events at or below P delivered to its sink, and its next_revision > P.

        It sends a WatchProgressRequest and, after the answer P arrives, a second one. etcd answers
        progress requests in order on a stream. From etcd 3.4.24/3.5.8 (#15220) and in kvcluster a
        progress answer is queued behind the watch events already due, so P alone would do; etcd
        3.4.23 sends it out of band, so it may overtake events due at or below P that are still in
        the member's send buffer. Waiting for the second answer gives the member's send loop a
        round trip to drain that buffer first: a mitigation, not a proof, on 3.4.23.
        """
        p = await self._progress_round()
        await self._progress_round()
        for w in self._watches.values():
            if w.synced and w.next_revision <= p:
                w.next_revision = p + 1
        return p

    async def _progress_round(self) -> int:
        fut = asyncio.get_running_loop().create_future()
        self._progress_waiters.append(fut)
        if self._connected:
            self._outbox.put_nowait(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
        try:
            return await fut
        finally:
            if fut in self._progress_waiters:
                self._progress_waiters.remove(fut)

    # --- lifecycle ----------------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        for w in list(self._watches.values()):
            self.close_watch(w)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        for fut in self._progress_waiters:
            if not fut.done():
                fut.cancel()

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            call = self._upstream.watch.Watch(metadata=self._metadata or None)
            writer = asyncio.get_running_loop().create_task(self._write(call))
            try:
                self._connected = True
                self._pending_creates.clear()
                for w in list(self._watches.values()):
                    if w.created:
                        UPSTREAM_WATCH_RESUMES.inc()
                    w.created = False
                    w.synced = False
                    w._fragments.clear()
                    self._send_create(w)
                for _ in self._progress_waiters:
                    self._outbox.put_nowait(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
                while True:
                    resp = await call.read()
                    if resp is _EOF:
                        raise ConnectionError("upstream closed the watch stream")
                    attempt = 0
                    self._dispatch(resp)
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, ConnectionError) as e:
                code = e.code().name if isinstance(e, grpc.aio.AioRpcError) else "EOF"
                log.info("upstream watch stream broke (%s); re-opening %d watches", code, len(self._watches))
            finally:
                self._connected = False
                writer.cancel()
                call.cancel()
                self._outbox = asyncio.Queue()
            await asyncio.sleep(RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)])
            attempt += 1

    async def _write(self, call) -> None:
        outbox = self._outbox
        try:
            while True:
                req = await outbox.get()
                await call.write(req)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError):
            pass  # the call ended; the reader sees why and re-opens

    # --- responses ----------------------------------------------------------------------------

    def _dispatch(self, resp: rpc_pb2.WatchResponse) -> None:
        self.last_header = resp.header
        watch_id = resp.watch_id
        if resp.created:
            if watch_id == -1 and self._pending_creates:
                watch_id = self._pending_creates.popleft()
            elif watch_id in self._pending_creates:
                self._pending_creates.remove(watch_id)
        elif watch_id == -1 and not resp.canceled:
            self._on_progress(resp.header.revision)
            return
        w = self._watches.get(watch_id)
        if w is None:
            return  # closed by us; its cancel is on the way
        if resp.created:
            self._on_created(w, resp)
        elif resp.canceled:
            self._watches.pop(w.watch_id, None)
            w._open = False
            UPSTREAM_WATCHES.labels(w.kind).dec()
            w.sink.on_canceled(w, resp.header, resp.compact_revision, resp.cancel_reason)
        elif resp.events:
            self._on_events(w, resp)
        elif w.synced and resp.header.revision >= w.next_revision:
            w.next_revision = resp.header.revision + 1  # a per-watch progress notification

    def _on_created(self, w: UpstreamWatch, resp: rpc_pb2.WatchResponse) -> None:
        if resp.canceled:  # refused at creation (permission denied, ...)
            self._watches.pop(w.watch_id, None)
            w._open = False
            UPSTREAM_WATCHES.labels(w.kind).dec()
            w.sink.on_canceled(w, resp.header, resp.compact_revision, resp.cancel_reason)
            return
        w.created = True
        rev = resp.header.revision
        if w.next_revision == 0:
            w.next_revision = rev + 1
        # The member's revision when it registered the watch was >= rev; anything at or below it
        # from next_revision on is history the member replays before the watch is synced.
        w.synced = w.next_revision > rev
        w._sync_at = rev
        w.sink.on_created(w, resp.header)

    def _on_events(self, w: UpstreamWatch, resp: rpc_pb2.WatchResponse) -> None:
        if resp.fragment:
            w._fragments.extend(resp.events)
            return
        events = list(resp.events)
        if w._fragments:
            events = w._fragments + events
            w._fragments = []
        events = [e for e in events if e.kv.mod_revision >= w.next_revision]
        if not events:
            return
        if self._namespace.active:
            for e in events:
                self._namespace.strip_kv(e.kv)
                if e.HasField("prev_kv"):
                    self._namespace.strip_kv(e.prev_kv)
        batch = EventBatch(resp.header, events)
        w.next_revision = batch.revision + 1
        if not w.synced and batch.revision >= w._sync_at:
            w.synced = True
        w.sink.on_events(w, batch)

    def _on_progress(self, revision: int) -> None:
        waiters, self._progress_waiters = self._progress_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(revision)
