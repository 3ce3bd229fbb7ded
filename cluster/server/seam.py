"""The propose -> apply seam: the one contract between the services and whatever replicates writes.

Two implementations: the Raft driver (cluster/replication, the default) and `LocalLog` (one
member, an fsync'd append-only log; --experimental-local-log). No service depends on which.

Flow of a write (all on the member's event loop unless noted):
1. A service builds a `kvpb.InternalRequest` with a unique `id`, registers the id in
   `RequestWait`, and calls `log.propose(bytes)`. `propose` never blocks and never awaits.
2. The log makes the entry durable (fsync on a worker thread; entries proposed while one fsync is
   in flight go into the next batch), replicates it, and hands committed entries to the apply
   callback, in index order, one call at a time.
3. The apply callback (`ApplyLoop.apply`) applies the batch to the store on the apply thread,
   then, back on the loop, resolves the waiting proposers and feeds the watch hub.

Exactly once: the store records the index of the last applied entry in the same transaction as
the data (`store.applied_index`). On start the log replays only entries past that index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    """One committed log entry: its position, the term it was written in, and the request bytes."""

    index: int
    term: int
    data: bytes


ApplyCallback = Callable[[list[Entry]], Awaitable[None]]
"""Applies committed entries. Called by the log with consecutive entries in index order, never
concurrently with itself; the log counts them applied when the returned awaitable completes."""


class ReplicatedLog(Protocol):
    """What the services need from replication: propose, read barrier, and progress figures."""

    async def start(self, apply: ApplyCallback, applied_index: int) -> None:
        """Recover, deliver every committed entry past `applied_index` to `apply` (awaiting it),
        then start accepting proposals. Returns when the member is ready to serve."""

    def propose(self, data: bytes) -> None:
        """Queue `data` for replication. Never blocks. The outcome arrives through the apply
        callback; a proposal may be lost if the member stops, fails or loses leadership before
        commit (the proposer then times out). Raises an `EtcdError` when it cannot even be
        queued: "server stopped" after `stop()`, "no leader" / "leader changed" (Raft)."""

    async def read_barrier(self) -> None:
        """Return once every entry committed before this call has been applied (linearizable
        read point). Raft: a ReadIndex round; the local log: applied >= last committed index."""

    async def stop(self) -> None:
        """Stop accepting proposals, finish or abandon in-flight work, close files."""

    @property
    def committed_index(self) -> int: ...

    @property
    def applied_index(self) -> int: ...

    @property
    def term(self) -> int: ...

    @property
    def leader_id(self) -> int:
        """The current leader's member id, 0 when there is none."""


class StoreImage(Protocol):
    """The state machine as Raft snapshots see it (log compaction and leader snapshots): the
    member's MVCC store is its own snapshot, so a Raft snapshot file holds only metadata and the
    store's data travels as a consistent copy of its database.

    Contract with the log: entries at or below a Raft snapshot's index may be dropped only after
    `sync()` returned having covered them (the store commits without fsync)."""

    scratch_dir: str
    """A directory on the store's file system for temporary and received images."""

    def sync(self) -> None:
        """Make every batch applied so far durable (blocking; any thread)."""

    def write_image(self, dest) -> int:
        """Write a consistent copy of the store's database to the file object `dest`; returns
        the bytes written. Its applied index is at least the log's applied index at the call
        (blocking; any thread)."""

    async def install_image(self, path: str) -> int:
        """Replace the store's whole state by the database file at `path` (a leader's image,
        already fsynced; consumed), and reset whatever the member derives from the store
        (leases, watchers). Called with no apply batch in flight. Returns the new applied index."""
