"""The Raft log as the core sees it: stable storage plus an unstable (not yet durable) tail.

::

    storage (durable)          unstable (in memory, handed out in Ready.entries/snapshot)
    [first_index .. off-1]     [off .. last_index]           (or an unstable snapshot)

Entries at ``off`` and above override storage entries at the same indexes: a follower that
truncated its log keeps the replacement in ``unstable`` until the application persisted it,
and ``MemoryStorage.append`` then replaces the stale suffix.

``committed`` and ``applied`` are volatile; ``committed`` is persisted through HardState.
Invariant: ``applied <= committed <= last_index()``.
"""
from __future__ import annotations

from .errors import CompactedError, RaftError, UnavailableError
from .storage import Storage, limit_size
from .types import Entry, Snapshot


class UnstableLog:
    """Entries (and possibly a snapshot) not yet known to be durable.

    ``offset`` is the index of ``entries[0]``. If ``snapshot`` is set, it precedes the entries
    and ``offset == snapshot.metadata.index + 1`` when it was installed.
    """

    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (of ``term``) are durable: drop them from the tail.

        Ignored if the entry at ``index`` was replaced meanwhile (different term): the
        replacement is still unstable and will be handed out again.
        """
        k = index - self.offset
        if k < 0 or k >= len(self.entries) or self.entries[k].term != term:
            return
        del self.entries[: k + 1]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, entries: list[Entry]) -> None:
        after = entries[0].index
        offset = self.offset
        if after == offset + len(self.entries):
            self.entries.extend(entries)
        elif after <= offset:
            # Replaces everything unstable (and a stable suffix, once persisted).
            self.offset = after
            self.entries = list(entries)
        else:
            del self.entries[after - offset :]
            self.entries.extend(entries)


class RaftLog:
    """Log access for the core: terms, slices, append with conflict handling, commit."""

    __slots__ = ("storage", "unstable", "committed", "applied", "max_committed_size")

    def __init__(self, storage: Storage, max_committed_size: int | None = None) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = UnstableLog(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_committed_size = max_committed_size

    # -- index space --------------------------------------------------------------------------

    def first_index(self) -> int:
        snap = self.unstable.snapshot
        if snap is not None:
            return snap.metadata.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        u = self.unstable
        if u.entries:
            return u.offset + len(u.entries) - 1
        if u.snapshot is not None:
            return u.snapshot.metadata.index
        return self.storage.last_index()

    def term(self, i: int) -> int:
        """Term of entry ``i``; raises ``CompactedError`` / ``UnavailableError``."""
        u = self.unstable
        off = u.offset
        if i >= off:
            k = i - off
            if k < len(u.entries):
                return u.entries[k].term
            raise UnavailableError(i)
        snap = u.snapshot
        if snap is not None:
            if i == snap.metadata.index:
                return snap.metadata.term
            raise CompactedError(i)
        return self.storage.term(i)

    def term_or_none(self, i: int) -> int | None:
        try:
            return self.term(i)
        except (CompactedError, UnavailableError):
            return None

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, term: int) -> bool:
        try:
            return self.term(i) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """Is a log ending at (``last_index``, ``term``) at least as up to date as ours?"""
        our_term = self.last_term()
        return term > our_term or (term == our_term and last_index >= self.last_index())

    # -- reads ----------------------------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``; raises ``CompactedError`` if ``lo`` was compacted away."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi - 1)
        u = self.unstable
        off = u.offset
        if lo >= off:
            return limit_size(u.entries[lo - off : hi - off], max_size)
        stored = self.storage.entries(lo, min(hi, off), max_size)
        if hi <= off or len(stored) < min(hi, off) - lo:
            return stored
        tail = u.entries[: hi - off]
        if not tail:
            return stored
        return limit_size(stored + tail, max_size)

    def entries_from(self, lo: int, max_size: int | None = None) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_size)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def has_next_committed_entries(self) -> bool:
        return self.committed > max(self.applied, self.first_index() - 1)

    def next_committed_entries(self) -> list[Entry]:
        """Committed entries not yet applied (bounded by ``max_committed_size``)."""
        lo = max(self.applied + 1, self.first_index())
        if lo > self.committed:
            return []
        return self.slice(lo, self.committed + 1, self.max_committed_size)

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest ``(i, term_i)`` with ``i <= index`` and ``term_i <= term``.

        Used for fast log backtracking after a rejected MsgApp: the leader (or follower) skips
        every index whose term is too high to possibly match.
        """
        if index > self.last_index():
            return index, 0
        while True:
            t = self.term_or_none(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1

    # -- writes ----------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> int:
        """Append (possibly truncating the unstable/stable suffix); returns the last index."""
        if not entries:
            return self.last_index()
        after = entries[0].index - 1
        if after < self.committed:
            raise RaftError(f"append after {after} would overwrite committed {self.committed}")
        self.unstable.truncate_and_append(entries)
        return self.last_index()

    def find_conflict(self, entries: list[Entry]) -> int:
        """Index of the first of ``entries`` whose term differs from ours (or is new); 0 if all
        are already present.

        Because matching is prefix-closed (Log Matching), one term lookup settles the common
        case (nothing or everything overlapping matches) and a binary search the rest.
        """
        if not entries:
            return 0
        first = entries[0].index
        last = self.last_index()
        if first > last:
            return first
        k = min(last, entries[-1].index) - first
        if self.match_term(first + k, entries[k].term):
            return entries[k + 1].index if k + 1 < len(entries) else 0
        lo, hi = 0, k
        while lo < hi:
            mid = (lo + hi) // 2
            if self.match_term(first + mid, entries[mid].term):
                lo = mid + 1
            else:
                hi = mid
        return entries[lo].index

    def maybe_append(self, index: int, log_term: int, committed: int, entries: list[Entry]):
        """Follower side of MsgApp. Returns the new last index of the leader-matched prefix, or
        ``None`` if our log does not contain (index, log_term)."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        ci = self.find_conflict(entries)
        if ci:
            if ci <= self.committed:
                raise RaftError(f"entry {ci} conflicts with committed entry {self.committed}")
            self.unstable.truncate_and_append(entries[ci - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise RaftError(
                    f"commit {index} out of range [last index {self.last_index()}]"
                )
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit ``index`` if it is newer and its entry is of ``term`` (the leader's term):
        older-term entries are never committed by counting replicas (Raft §5.4.2)."""
        if index > self.committed and self.term_or_none(index) == term:
            self.committed = index
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index == 0:
            return
        if index > self.committed or index < self.applied:
            raise RaftError(
                f"applied {index} out of range [prev applied {self.applied}, "
                f"committed {self.committed}]"
            )
        self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
