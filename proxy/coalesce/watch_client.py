"""The proxy's side of one client Watch RPC: watch ids, per-client options, a bounded send queue,
progress answers.

Contracts (etcd 3.4 semantics unless stated):
- Watch ids: a client-chosen id (non-zero `watch_id`) is used as is; a duplicate gets
  `created=true, canceled=true, watch_id=-1` and etcd's reason text. Id 0 means "pick one": the
  lowest free id counting up from the last one picked.
- prev_kv, NOPUT/NODELETE filters and fragment are applied here, per watcher; the shared upstream
  watch always carries prev_kv.
- Cancel: `canceled=true` for a known id, nothing for an unknown one (as etcd).
- The send queue holds at most `send_queue_limit` responses. A watcher's batch that does not fit
  means the client is too slow: every watcher of the stream is canceled (canceled=true with a
  `cancel_reason`), detached from its fanout, and its cancel response is queued beyond the limit.
  Nothing here ever waits for the client except the stream's own send loop.
- WatchProgressRequest: answered with watch_id=-1 and a header.revision R that is >= the revision
  of every event already queued on this stream, and such that every event of every watcher of the
  stream at or below R is queued before the answer. The answer waits while a watcher of the stream
  is catching up or its upstream watch is replaying history (etcd >= 3.5.8 also defers progress for
  unsynced watchers).
- progress_notify: every `progress_interval` seconds, a watcher that asked for it and was sent
  nothing during the interval gets an empty response with header.revision = its fanout's position.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

import grpc

from protos.etcdserverpb import rpc_pb2

from ..namespace import Namespace
from .watch_events import DEFAULT_FRAGMENT_BYTES, EventBatch, WatchView, encode_response, watch_id_field
from .watch_metrics import CLIENT_WATCHERS, PROGRESS_ANSWERS, SLOW_WATCHERS_CANCELED

if TYPE_CHECKING:
    from .watch_coalescer import WatchCoalescer
    from .watch_fanout import WatchFanout

log = logging.getLogger("kvproxy.watch")

DEFAULT_SEND_QUEUE_LIMIT = 1024
DEFAULT_PROGRESS_INTERVAL_S = 600.0   # etcd's default --experimental-watch-progress-notify-interval
DUPLICATE_ID_REASON = "mvcc: duplicate watch ID provided on the WatchStream"
SLOW_REASON = ("kvproxy: watch stream too slow: its send buffer of {limit} responses is full; "
               "watch canceled, re-create it from the revision after the last one received")
NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
NODELETE = rpc_pb2.WatchCreateRequest.NODELETE


class ClientWatcher:
    """One client watch: a watch_id on one client stream, with that client's options."""

    __slots__ = ("stream", "watch_id", "id_field", "view", "start_revision", "progress_notify",
                 "min_revision", "fanout", "live", "closed", "sent_since_tick")

    def __init__(self, stream: "ClientWatchStream", watch_id: int, creq: rpc_pb2.WatchCreateRequest):
        self.stream = stream
        self.watch_id = watch_id
        self.id_field = watch_id_field(watch_id)
        filters = set(creq.filters)
        self.view = WatchView(prev_kv=creq.prev_kv, no_put=NOPUT in filters,
                              no_delete=NODELETE in filters, fragment=creq.fragment)
        self.start_revision = max(creq.start_revision, 0)
        self.progress_notify = creq.progress_notify
        self.min_revision = 0
        self.fanout: WatchFanout | None = None
        self.live = False       # in its fanout's broadcast (created sent, caught up)
        self.closed = False
        self.sent_since_tick = False

    def deliver(self, batch: EventBatch) -> None:
        """Queue `batch` for this client as its options say. Never blocks."""
        if self.closed or batch.revision < self.min_revision:
            return
        bodies = batch.bodies(self.view, self.stream.fragment_bytes, self.min_revision)
        if bodies:
            self.stream.queue_events(self, bodies, batch.revision)


class ClientWatchStream:
    """Serves one client Watch RPC through the shared `WatchCoalescer`."""

    def __init__(self, coalescer: "WatchCoalescer", identity: tuple[tuple[str, str], ...],
                 namespace: Namespace, *, send_queue_limit: int = DEFAULT_SEND_QUEUE_LIMIT,
                 progress_interval: float = DEFAULT_PROGRESS_INTERVAL_S,
                 fragment_bytes: int = DEFAULT_FRAGMENT_BYTES):
        self._coalescer = coalescer
        self.identity = identity
        self._namespace = namespace
        self.send_queue_limit = send_queue_limit
        self.fragment_bytes = fragment_bytes
        self._progress_interval = progress_interval
        self.watchers: dict[int, ClientWatcher] = {}
        self._next_id = 0
        self._queue: collections.deque[bytes] = collections.deque()
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Event()    # a watcher went live or left: progress answers re-check
        self.max_queued_revision = 0       # highest event revision queued on this stream
        self._progress_requests = 0
        self._progress_task: asyncio.Task | None = None
        self._notify_task: asyncio.Task | None = None
        self._closed = False

    # --- the RPC ------------------------------------------------------------------------------

    async def serve(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        """Run until the client goes away. A client's half-close does not end the stream (etcd)."""
        reader = asyncio.get_running_loop().create_task(self._read(request_iterator))
        try:
            while True:
                queue = self._queue
                while queue:
                    await context.write(queue.popleft())
                self._wakeup.clear()
                if reader.done() and reader.exception() is not None:
                    raise reader.exception()
                await self._wakeup.wait()
        finally:
            reader.cancel()
            self.close()

    async def _read(self, request_iterator) -> None:
        try:
            async for req in request_iterator:
                self.handle(req)
        finally:
            self._wakeup.set()

    def handle(self, req: rpc_pb2.WatchRequest) -> None:
        which = req.WhichOneof("request_union")
        if which == "create_request":
            self._create(req.create_request)
        elif which == "cancel_request":
            self._cancel(req.cancel_request.watch_id)
        elif which == "progress_request":
            self._progress_requests += 1
            if self._progress_task is None or self._progress_task.done():
                self._progress_task = asyncio.get_running_loop().create_task(self._answer_progress())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._progress_task, self._notify_task):
            if task is not None:
                task.cancel()
        for w in list(self.watchers.values()):
            self._detach(w)

    # --- create / cancel ----------------------------------------------------------------------

    def _create(self, creq: rpc_pb2.WatchCreateRequest) -> None:
        watch_id = creq.watch_id
        if watch_id == 0:
            while self._next_id in self.watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self.watchers:
            self._queue_control(encode_response(header=self._header(), watch_id=-1, created=True,
                                                canceled=True, cancel_reason=DUPLICATE_ID_REASON))
            return
        w = ClientWatcher(self, watch_id, creq)
        self.watchers[watch_id] = w
        CLIENT_WATCHERS.inc()
        if w.progress_notify and self._notify_task is None:
            self._notify_task = asyncio.get_running_loop().create_task(self._progress_notify_loop())
        key = self._namespace.key(creq.key)
        range_end = self._namespace.range_end(creq.range_end)
        self._coalescer.subscribe(self.identity, key, range_end, w)

    def _cancel(self, watch_id: int) -> None:
        w = self.watchers.get(watch_id)
        if w is None:
            return
        self._detach(w)
        self._queue_control(encode_response(header=self._header(w), watch_id=watch_id, canceled=True))

    def _detach(self, w: ClientWatcher) -> None:
        """Remove `w` from this stream and from its fanout (client side: cancel, slow, gone)."""
        if w.closed:
            return
        w.closed = True
        self.watchers.pop(w.watch_id, None)
        CLIENT_WATCHERS.dec()
        if w.fanout is not None:
            w.fanout.unsubscribe(w)
        self._changed.set()

    # --- called by fanouts and catch-ups ------------------------------------------------------

    def send_created(self, w: ClientWatcher, header: rpc_pb2.ResponseHeader) -> None:
        self._queue_control(encode_response(header=header, watch_id=w.watch_id, created=True))

    def watcher_went_live(self, w: ClientWatcher) -> None:
        w.live = True
        self._changed.set()

    def cancel_watcher(self, w: ClientWatcher, header: rpc_pb2.ResponseHeader,
                       compact_revision: int, reason: str, created: bool = False) -> None:
        """The upstream ended `w` (compacted, permission denied): tell the client as etcd would.
        The fanout has already let go of `w`."""
        if w.closed:
            return
        w.closed = True
        w.live = False
        self.watchers.pop(w.watch_id, None)
        CLIENT_WATCHERS.dec()
        self._changed.set()
        # A watch refused at creation is answered as etcd does: created and canceled, watch_id -1.
        self._queue_control(encode_response(header=header, watch_id=-1 if created else w.watch_id,
                                            created=created, canceled=True,
                                            compact_revision=compact_revision, cancel_reason=reason))

    def queue_events(self, w: ClientWatcher, bodies: list[bytes], revision: int) -> None:
        if len(self._queue) + len(bodies) > self.send_queue_limit:
            self._too_slow()
            return
        id_field = w.id_field
        for body in bodies:
            self._queue.append(body + id_field)
        w.sent_since_tick = True
        if revision > self.max_queued_revision:
            self.max_queued_revision = revision
        self._wakeup.set()

    def _too_slow(self) -> None:
        victims = list(self.watchers.values())
        log.warning("watch stream too slow (%d responses unsent): canceling %d watchers",
                    len(self._queue), len(victims))
        SLOW_WATCHERS_CANCELED.inc(len(victims))
        reason = SLOW_REASON.format(limit=self.send_queue_limit)
        for w in victims:
            self._detach(w)
            self._queue_control(encode_response(header=self._header(w), watch_id=w.watch_id,
                                                canceled=True, cancel_reason=reason))

    def _queue_control(self, data: bytes) -> None:
        self._queue.append(data)
        self._wakeup.set()

    def _header(self, w: ClientWatcher | None = None) -> rpc_pb2.ResponseHeader:
        if w is not None and w.fanout is not None:
            return w.fanout.header(max(w.fanout.position, 0))
        return self._coalescer.last_header(self.identity)

    # --- progress -----------------------------------------------------------------------------

    async def _answer_progress(self) -> None:
        while self._progress_requests:
            pending = self._progress_requests
            revision = await self._progress_revision()
            self._progress_requests -= pending
            header = self._coalescer.last_header(self.identity)
            header.revision = revision
            for _ in range(pending):
                self._queue_control(encode_response(header=header, watch_id=-1))
            PROGRESS_ANSWERS.inc(pending)

    async def _progress_revision(self) -> int:
        """The revision R described in the module docstring."""
        async with self._coalescer.borrow_stream(self.identity) as upstream:
            while True:
                if any(not w.live for w in self.watchers.values()):
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                confirmed = await upstream.confirmed_revision()
                target = max(confirmed, self.max_queued_revision)
                if all(w.fanout.position >= target for w in self.watchers.values() if w.live):
                    return target
                # Events above `confirmed` were queued meanwhile, or an upstream watch is still
                # replaying after a failover: another round, paced.
                await asyncio.sleep(0.02)

    async def _progress_notify_loop(self) -> None:
        while True:
            await asyncio.sleep(self._progress_interval)
            for w in list(self.watchers.values()):
                if w.progress_notify and w.live and not w.sent_since_tick:
                    self._queue_control(encode_response(header=self._header(w), watch_id=w.watch_id))
                w.sent_since_tick = False
