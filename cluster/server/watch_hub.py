"""Watch fan-out: live delivery of applied changes, catch-up from history, slow-watcher handling.

Model (etcd's watchableStore, with per-stream bounded outboxes):
- A `Watcher` is *synced* when everything up to the hub's `notified_rev` has been delivered to it;
  `notify` (called by the apply path after each committed batch) pushes new events to synced
  watchers only.
- A watcher that starts in the past, or whose stream's outbox is full when `notify` runs, is
  *unsynced*: a catch-up task reads `store.events` from its `next_rev` (on a reader thread),
  waits for room in the outbox, and re-joins the synced set once `next_rev > notified_rev`.
  Every delivery advances `next_rev`, and `notify` skips events below it: no gap, no duplicate.
- Nothing here blocks `notify`: it only appends to outboxes that have room.
Event-loop only, except `store.events`, which runs on the hub's reader thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from cluster.mvcc import errors as store_errors
from protos.etcdserverpb import rpc_pb2
from protos.mvccpb import kv_pb2

log = logging.getLogger(__name__)

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE
CATCH_UP_LIMIT = 1000  # events per store.events call


class WatchOutbox:
    """The responses waiting to be written to one Watch stream.

    Control responses (created, canceled, progress) always fit; event responses count against
    `capacity`, so a client that stops reading holds at most `capacity` of them in memory. The
    stream's request reader applies back-pressure to control responses (`wait_backlog_below`)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._queue: collections.deque = collections.deque()
        self._events_queued = 0
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._taken = asyncio.Event()
        self.closed = False

    def put_control(self, resp: rpc_pb2.WatchResponse) -> None:
        self._queue.append((resp, False))
        self._readable.set()

    def offer(self, resp: rpc_pb2.WatchResponse) -> bool:
        """Queue an event response if there is room; False (nothing queued) when full."""
        if self._events_queued >= self.capacity:
            return False
        self._queue.append((resp, True))
        self._events_queued += 1
        if self._events_queued >= self.capacity:
            self._space.clear()
        self._readable.set()
        return True

    async def put(self, resp: rpc_pb2.WatchResponse) -> None:
        """Queue an event response, waiting for room."""
        while not self.offer(resp):
            if self.closed:
                return
            await self._space.wait()

    async def get(self) -> rpc_pb2.WatchResponse:
        while not self._queue:
            self._readable.clear()
            await self._readable.wait()
        resp, is_event = self._queue.popleft()
        self._taken.set()
        if is_event:
            self._events_queued -= 1
            self._space.set()
        return resp

    async def wait_backlog_below(self, limit: int) -> None:
        """Return once fewer than `limit` responses of any kind are queued."""
        while len(self._queue) >= limit and not self.closed:
            self._taken.clear()
            await self._taken.wait()

    def close(self) -> None:
        self.closed = True
        self._space.set()
        self._taken.set()


class Watcher:
    """One watch on a stream: what it selects, how it wants events, and how far it has got."""

    __slots__ = ("id", "outbox", "key", "range_end", "no_put", "no_delete", "prev_kv",
                 "progress_notify", "fragment", "next_rev", "synced", "active", "sent_events",
                 "catch_up")

    def __init__(self, watch_id: int, outbox: WatchOutbox, req: rpc_pb2.WatchCreateRequest,
                 next_rev: int):
        self.id = watch_id
        self.outbox = outbox
        self.key = req.key
        self.range_end = req.range_end  # b"" = the key alone, b"\0" = every key >= key
        filters = set(req.filters)
        self.no_put = rpc_pb2.WatchCreateRequest.NOPUT in filters
        self.no_delete = rpc_pb2.WatchCreateRequest.NODELETE in filters
        self.prev_kv = req.prev_kv
        self.progress_notify = req.progress_notify
        self.fragment = req.fragment
        self.next_rev = next_rev
        self.synced = False
        self.active = True
        self.sent_events = False
        self.catch_up: asyncio.Task | None = None

    @property
    def is_range(self) -> bool:
        return bool(self.range_end)

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end

    def select(self, events, strip_prev: Callable) -> list:
        """The events this watcher wants, in its shape (filters, prev_kv or not)."""
        out = []
        for ev in events:
            if (ev.type == PUT and self.no_put) or (ev.type == DELETE and self.no_delete):
                continue
            out.append(ev if self.prev_kv or not ev.HasField("prev_kv") else strip_prev(ev))
        return out


class WatchHub:
    """All watchers of the member; `notify` is the apply path's hook (see module docstring)."""

    def __init__(self, store, header: Callable[[int], rpc_pb2.ResponseHeader], *,
                 progress_interval: float = 600.0):
        self.store = store
        self._header = header
        self._progress_interval = progress_interval
        self.notified_rev = store.current_revision
        # synced watchers: single-key ones by key; range ones by their (key, range_end), so that
        # many watchers of one range cost one match per event
        self._by_key: dict[bytes, set[Watcher]] = {}
        self._ranges: dict[tuple[bytes, bytes], set[Watcher]] = {}
        self._unsynced: set[Watcher] = set()
        self.watcher_count = 0
        self.stream_count = 0
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watch-catchup")
        self._progress_task: asyncio.Task | None = None

    @property
    def slow_watcher_count(self) -> int:
        return len(self._unsynced)

    def start(self) -> None:
        self._progress_task = asyncio.create_task(self._progress_loop(), name="watch-progress")

    async def stop(self) -> None:
        if self._progress_task is not None:
            self._progress_task.cancel()
            try:
                await self._progress_task
            except asyncio.CancelledError:
                pass
        for w in list(self._unsynced):
            self.remove(w)
        self._reader.shutdown(wait=False, cancel_futures=True)

    # -- watcher lifecycle (called by the Watch service) -------------------------------------

    def start_revision(self, requested: int) -> int:
        """The first revision a new watcher wants: requested, or the next one to be written."""
        return requested if requested > 0 else self.notified_rev + 1

    def add(self, w: Watcher) -> None:
        self.watcher_count += 1
        if w.next_rev > self.notified_rev:
            self._sync(w)
        else:
            self._unsync(w)

    def remove(self, w: Watcher) -> None:
        if not w.active:
            return
        w.active = False
        self.watcher_count -= 1
        if w.synced:
            self._index_remove(w)
        self._unsynced.discard(w)
        if w.catch_up is not None and w.catch_up is not asyncio.current_task():
            w.catch_up.cancel()

    # -- the apply path's hook ---------------------------------------------------------------

    def notify(self, changes, revision: int) -> None:
        """Deliver committed changes, [(main revision, [Event])] in order, to synced watchers."""
        stripped: dict[int, kv_pb2.Event] = {}

        def strip_prev(ev):
            s = stripped.get(id(ev))
            if s is None:
                s = stripped[id(ev)] = kv_pb2.Event(type=ev.type, kv=ev.kv)
            return s

        for rev, events in changes:
            matched: dict[Watcher, list] = {}
            for ev in events:
                key = ev.kv.key
                for w in self._by_key.get(key, ()):
                    matched.setdefault(w, []).append(ev)
                for ws in self._ranges.values():
                    if next(iter(ws)).matches(key):
                        for w in ws:
                            matched.setdefault(w, []).append(ev)
            header = self._header(rev) if matched else None
            for w, evs in matched.items():
                if rev < w.next_rev or not w.synced:
                    continue
                selected = w.select(evs, strip_prev)
                if selected:
                    resp = rpc_pb2.WatchResponse(header=header, watch_id=w.id, events=selected)
                    if not w.outbox.offer(resp):
                        self._unsync(w)  # next_rev stays at rev: catch-up resends from here
                        continue
                    w.sent_events = True
                w.next_rev = rev + 1
            self.notified_rev = rev
        if revision > self.notified_rev:
            self.notified_rev = revision

    def resync_all(self) -> None:
        """The store was replaced wholesale (a leader's snapshot installed): every synced watcher
        catches up again from the new store's history from its next revision (or is cancelled
        as compacted), since the changes in between were never notified."""
        self.notified_rev = self.store.current_revision
        synced = [w for index in (self._by_key, self._ranges) for ws in index.values() for w in ws]
        for w in synced:
            self._unsync(w)

    def progress(self, w: Watcher) -> None:
        """A progress notification for `w` if it is synced (etcd's RequestProgress)."""
        if w.synced:
            w.outbox.offer(rpc_pb2.WatchResponse(header=self._header(self.notified_rev), watch_id=w.id))

    # -- synced / unsynced ---------------------------------------------------------------------

    def _sync(self, w: Watcher) -> None:
        w.synced = True
        self._unsynced.discard(w)
        if w.is_range:
            self._ranges.setdefault((w.key, w.range_end), set()).add(w)
        else:
            self._by_key.setdefault(w.key, set()).add(w)

    def _index_remove(self, w: Watcher) -> None:
        w.synced = False
        index, slot = (self._ranges, (w.key, w.range_end)) if w.is_range else (self._by_key, w.key)
        ws = index.get(slot)
        if ws is not None:
            ws.discard(w)
            if not ws:
                del index[slot]

    def _unsync(self, w: Watcher) -> None:
        if w.synced:
            self._index_remove(w)
        self._unsynced.add(w)
        w.catch_up = asyncio.create_task(self._catch_up(w), name=f"watch-catchup-{w.id}")

    async def _catch_up(self, w: Watcher) -> None:
        loop = asyncio.get_running_loop()
        strip = lambda ev: kv_pb2.Event(type=ev.type, kv=ev.kv)  # noqa: E731
        try:
            while w.active:
                start = w.next_rev
                compact = self.store.compact_revision
                if start < compact:
                    self._cancel_compacted(w, compact)
                    return
                try:
                    found, next_rev = await loop.run_in_executor(
                        self._reader, self.store.events, w.key, w.range_end, start, CATCH_UP_LIMIT)
                except store_errors.CompactedError as exc:
                    self._cancel_compacted(w, exc.compact_revision)
                    return
                if not w.active:
                    return
                selected = w.select([ev for rev, ev in found if rev >= w.next_rev], strip)
                if selected:
                    resp = rpc_pb2.WatchResponse(header=self._header(self.store.current_revision),
                                                 watch_id=w.id, events=selected)
                    await w.outbox.put(resp)
                    if not w.active or w.outbox.closed:
                        return
                    w.sent_events = True
                w.next_rev = max(w.next_rev, next_rev)
                if w.next_rev > self.notified_rev:
                    self._sync(w)
                    return
                if not found:  # history not yet visible to readers; try again shortly
                    await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            pass
        finally:
            w.catch_up = None

    def _cancel_compacted(self, w: Watcher, compact_revision: int) -> None:
        """etcd: a response with canceled=true and compact_revision, header revision 0."""
        w.outbox.put_control(rpc_pb2.WatchResponse(
            header=self._header(0), watch_id=w.id, canceled=True, compact_revision=compact_revision))
        self.remove(w)

    async def _progress_loop(self) -> None:
        """Every interval, a progress notification to each synced progress_notify watcher that
        got no events since the last one (etcd's progress ticker)."""
        while True:
            await asyncio.sleep(self._progress_interval)
            watchers = [w for index in (self._by_key, self._ranges) for ws in index.values() for w in ws]
            for w in watchers:
                if w.progress_notify:
                    if not w.sent_events:
                        self.progress(w)
                    w.sent_events = False
