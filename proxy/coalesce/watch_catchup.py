"""WatchCatchUp: replays a client watcher's history, then hands it to its fanout's live broadcast.

A watcher asking for start_revision s at or below its fanout's position p0 needs the events in
[s, p0], which the shared watch has already passed. The catch-up opens a temporary upstream watch
from s (same identity, same upstream stream) and forwards what it replays. Meanwhile the fanout
keeps broadcasting; the catch-up buffers those live batches (all above p0).

Join rule (no gap, no duplicate): when the temporary watch delivers a batch whose revision r is
>= p0, the watcher has every event up to r; it is given the buffered live batches from r + 1 on,
then joins the broadcast with min_revision = last delivered + 1, and the temporary watch closes.
Batches hold whole revisions, so filtering by revision is exact.

If the live buffer grows past `LIVE_BUFFER_LIMIT` batches, it is dropped and the join point moves
up to the newest live revision: the temporary watch then delivers those events itself.

Known cost: on a key with no write after p0 the temporary watch cannot tell "done" from "still
replaying" (etcd sends nothing for an empty replay), so the watcher stays on it, correctly, until
the next event on its range: one extra upstream watcher meanwhile.

If the upstream cancels the temporary watch (start revision compacted), the watcher gets etcd's
canceled response with compact_revision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protos.etcdserverpb import rpc_pb2

from .watch_events import EventBatch
from .watch_upstream import UpstreamWatch

if TYPE_CHECKING:
    from .watch_client import ClientWatcher
    from .watch_fanout import WatchFanout

LIVE_BUFFER_LIMIT = 256


class WatchCatchUp:
    """Brings one watcher from `start_revision` to its fanout's live broadcast."""

    def __init__(self, fanout: "WatchFanout", watcher: "ClientWatcher", start_revision: int, join_at: int):
        self._fanout = fanout
        self._watcher = watcher
        self._join_at = join_at
        self._buffer: list[EventBatch] = []
        self._done = False
        self._watch = fanout.stream.open(fanout.key, fanout.range_end, start_revision, self, kind="catchup")

    def on_live(self, batch: EventBatch) -> None:
        """A batch the fanout broadcast while this watcher is still catching up."""
        if len(self._buffer) >= LIVE_BUFFER_LIMIT:
            self._buffer.clear()
            self._join_at = batch.revision
            return
        self._buffer.append(batch)

    def close(self) -> None:
        self._done = True
        self._fanout.stream.close_watch(self._watch)

    # --- WatchSink (the temporary upstream watch) ---------------------------------------------

    def on_created(self, watch: UpstreamWatch, header: rpc_pb2.ResponseHeader) -> None:
        pass  # the client already has its created response, from the fanout

    def on_events(self, watch: UpstreamWatch, batch: EventBatch) -> None:
        if self._done:
            return
        watcher = self._watcher
        watcher.deliver(batch)
        if watcher.closed or batch.revision < self._join_at:
            return
        next_revision = batch.revision + 1
        watcher.min_revision = next_revision
        for live in self._buffer:
            watcher.deliver(live)
            next_revision = max(next_revision, live.revision + 1)
        self._buffer.clear()
        self.close()
        self._fanout.catchup_done(watcher, next_revision)

    def on_canceled(self, watch: UpstreamWatch, header: rpc_pb2.ResponseHeader,
                    compact_revision: int, reason: str) -> None:
        if self._done:
            return
        self._done = True
        self._fanout.catchup_canceled(self._watcher, header, compact_revision, reason)
