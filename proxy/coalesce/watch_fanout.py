"""WatchFanout: one shared upstream watch on (identity, key, range_end), broadcast to client watchers.

Contracts:
- `position` is the revision up to which every event of the range has been handed to every live
  subscriber (-1 until the upstream watch is created). It only grows.
- A subscriber is sent its `created` response with header.revision = position when it is
  admitted, then only events at or above its start: a watcher starting at 0 or above the position
  joins the live broadcast at once; one starting at or below the position is replayed from the
  fanout's recent history when that covers its start, or else caught up from the cluster
  (`WatchCatchUp`), and joins the broadcast when it has reached it.
- Recent history: the last `HISTORY_BATCHES` batches broadcast, complete from `_history_from`
  (every event of the range from that revision up to `position` is in it). A watcher served from
  it costs the cluster nothing, even on a key with no new write. Unlike etcd, such a watcher is
  served even if the cluster has compacted its start revision meanwhile (the events are still
  right; etcd would answer "compacted").
- Broadcasting is synchronous and never waits on a client: each client stream has a bounded queue
  and cancels itself when it overflows (see `ClientWatchStream`).
- When the upstream watch is canceled (compaction while resuming after a failover, permission
  denied) every subscriber is canceled with the upstream's compact_revision / reason, and the
  fanout closes. When its last subscriber leaves, it closes its upstream watch.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Callable

from protos.etcdserverpb import rpc_pb2

from .watch_catchup import WatchCatchUp
from .watch_events import EventBatch
from .watch_metrics import EVENTS_COALESCING, WATCHERS_COALESCING
from .watch_upstream import UpstreamWatch, UpstreamWatchStream

if TYPE_CHECKING:
    from .watch_client import ClientWatcher

HISTORY_BATCHES = 64


class WatchFanout:
    """One upstream watch shared by every client watcher of the same identity, key and range_end."""

    def __init__(self, stream: UpstreamWatchStream, key: bytes, range_end: bytes,
                 on_closed: Callable[["WatchFanout"], None]):
        self.stream = stream
        self.key = key
        self.range_end = range_end
        self._on_closed = on_closed
        self._live: dict["ClientWatcher", None] = {}      # insertion-ordered set
        self._snapshot: tuple["ClientWatcher", ...] = ()  # what a broadcast iterates over
        self._waiting: list["ClientWatcher"] = []         # until the upstream watch is created
        self._catchups: dict["ClientWatcher", WatchCatchUp] = {}
        self._history: collections.deque[EventBatch] = collections.deque()
        self._history_from: int | None = None   # set when the upstream watch is first created
        self._closed = False
        self._upstream_watch: UpstreamWatch = stream.open(key, range_end, 0, self)

    # --- state --------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        return self._upstream_watch.position

    @property
    def subscriber_count(self) -> int:
        return len(self._live) + len(self._waiting) + len(self._catchups)

    def header(self, revision: int) -> rpc_pb2.ResponseHeader:
        h = rpc_pb2.ResponseHeader()
        h.CopyFrom(self.stream.last_header)
        h.revision = revision
        return h

    # --- subscribers --------------------------------------------------------------------------

    def subscribe(self, watcher: "ClientWatcher") -> None:
        if self.subscriber_count:
            WATCHERS_COALESCING.inc()
        watcher.fanout = self
        if self.position < 0:
            self._waiting.append(watcher)
        else:
            self._admit(watcher)

    def unsubscribe(self, watcher: "ClientWatcher") -> None:
        if watcher in self._live:
            del self._live[watcher]
            self._snapshot = tuple(self._live)
        elif watcher in self._catchups:
            self._catchups.pop(watcher).close()
        elif watcher in self._waiting:
            self._waiting.remove(watcher)
        else:
            return
        watcher.live = False
        if self.subscriber_count:
            WATCHERS_COALESCING.dec()
        else:
            self.close()

    def _admit(self, watcher: "ClientWatcher") -> None:
        position = self.position
        watcher.stream.send_created(watcher, self.header(position))
        start = watcher.start_revision
        if start == 0 or start > position:
            self._go_live(watcher, max(start, position + 1))
        elif start >= self._history_from:
            watcher.min_revision = start
            for batch in self._history:
                watcher.deliver(batch)
            if not watcher.closed:
                self._go_live(watcher, position + 1)
        else:
            self._catchups[watcher] = WatchCatchUp(self, watcher, start, position)

    def _go_live(self, watcher: "ClientWatcher", min_revision: int) -> None:
        watcher.min_revision = min_revision
        self._live[watcher] = None
        self._snapshot = tuple(self._live)
        watcher.stream.watcher_went_live(watcher)

    def catchup_done(self, watcher: "ClientWatcher", next_revision: int) -> None:
        """Called by a WatchCatchUp whose watcher has been delivered every event below
        `next_revision`, and every buffered live event: it now takes the broadcast from there."""
        self._catchups.pop(watcher, None)
        if not watcher.closed:
            self._go_live(watcher, next_revision)

    def catchup_canceled(self, watcher: "ClientWatcher", header: rpc_pb2.ResponseHeader,
                         compact_revision: int, reason: str) -> None:
        self._catchups.pop(watcher, None)
        watcher.stream.cancel_watcher(watcher, header, compact_revision, reason)
        if self.subscriber_count:
            WATCHERS_COALESCING.dec()
        else:
            self.close()

    # --- WatchSink ----------------------------------------------------------------------------

    def on_created(self, watch: UpstreamWatch, header: rpc_pb2.ResponseHeader) -> None:
        if self._history_from is None:
            self._history_from = self.position + 1
        waiting, self._waiting = self._waiting, []
        for watcher in waiting:
            if not watcher.closed:
                self._admit(watcher)

    def on_events(self, watch: UpstreamWatch, batch: EventBatch) -> None:
        receivers = self._snapshot
        for watcher in receivers:
            watcher.deliver(batch)
        for catchup in list(self._catchups.values()):
            catchup.on_live(batch)
        self._history.append(batch)
        if len(self._history) > HISTORY_BATCHES:
            self._history_from = self._history.popleft().revision + 1
        if len(receivers) > 1:
            EVENTS_COALESCING.inc(len(receivers) - 1)

    def on_canceled(self, watch: UpstreamWatch, header: rpc_pb2.ResponseHeader,
                    compact_revision: int, reason: str) -> None:
        never_created = set(self._waiting)
        everyone = [*self._live, *self._waiting, *self._catchups]
        for catchup in self._catchups.values():
            catchup.close()
        if len(everyone) > 1:
            WATCHERS_COALESCING.dec(len(everyone) - 1)
        self._live.clear()
        self._snapshot = ()
        self._waiting.clear()
        self._catchups.clear()
        for watcher in everyone:
            watcher.live = False
            # Refused at creation (permission denied): etcd answers created and canceled at once.
            watcher.stream.cancel_watcher(watcher, header, compact_revision, reason,
                                          created=watcher in never_created)
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stream.close_watch(self._upstream_watch)
        self._on_closed(self)
