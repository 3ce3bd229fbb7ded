"""The stable log storage the Raft core reads, and its in-memory implementation.

The core never writes to storage. The application (the driver) writes to it *after* the data
is durable: it appends ``Ready.entries``, sets ``Ready.hard_state`` and applies
``Ready.snapshot`` once the WAL has fsynced them, and before calling ``RawNode.advance()``.
A WAL-backed driver keeps a ``MemoryStorage`` in sync with its WAL and rebuilds it from the
WAL (and the newest snapshot file) on restart.
"""
from __future__ import annotations

from operator import attrgetter
from typing import Protocol

from .codec import ENTRY_OVERHEAD
from .errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from .types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

_data = attrgetter("data")


def entries_size(entries) -> int:
    """Bytes ``entries`` count for flow control (payload plus fixed encoding overhead)."""
    return ENTRY_OVERHEAD * len(entries) + sum(map(len, map(_data, entries)))


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_size`` bytes, but at least one entry."""
    if max_size is None or len(entries) <= 1 or entries_size(entries) <= max_size:
        return entries
    total = 0
    for i, e in enumerate(entries):
        total += len(e.data) + ENTRY_OVERHEAD
        if total > max_size and i > 0:
            return entries[:i]
    return entries


class Storage(Protocol):
    """What the Raft core reads: the durable part of the log, hard state and snapshot.

    Index space: entries ``first_index() .. last_index()`` are available; ``term()`` also
    answers for ``first_index() - 1`` (the snapshot's index). Older indexes raise
    ``CompactedError``; newer ones ``UnavailableError``.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted HardState and the ConfState of the latest snapshot."""

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``, limited to ``max_size`` bytes (at least one entry)."""

    def term(self, i: int) -> int:
        """Term of entry ``i``, for ``first_index() - 1 <= i <= last_index()``."""

    def first_index(self) -> int:
        """Index of the first available entry (snapshot index + 1)."""

    def last_index(self) -> int:
        """Index of the last entry (the snapshot index if there are no entries)."""

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (may raise ``SnapshotTemporarilyUnavailable``)."""


class MemoryStorage:
    """A ``Storage`` held in memory: a snapshot, the entries after it and the HardState.

    ``_entries[0]`` is a dummy entry standing for the snapshot: its index and term are the
    snapshot's. Not thread-safe: the driver uses it from one thread (its event loop).
    """

    __slots__ = ("_hard_state", "_snapshot", "_entries")

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._entries: list[Entry] = [Entry(term=0, index=0)]

    # -- reads (the Storage protocol) -------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        hs = self._hard_state
        return HardState(hs.term, hs.vote, hs.commit), self._snapshot.metadata.conf_state

    def hard_state(self) -> HardState:
        return self._hard_state

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        ents = self._entries
        offset = ents[0].index
        if lo <= offset:
            raise CompactedError(lo)
        if hi > offset + len(ents):
            raise UnavailableError(hi - 1)
        return limit_size(ents[lo - offset : hi - offset], max_size)

    def term(self, i: int) -> int:
        ents = self._entries
        offset = ents[0].index
        if i < offset:
            raise CompactedError(i)
        k = i - offset
        if k >= len(ents):
            raise UnavailableError(i)
        return ents[k].term

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (by the application, after the data is durable) -----------------------------

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = HardState(hs.term, hs.vote, hs.commit)

    def append(self, entries: list[Entry]) -> None:
        """Append durable entries; entries at indexes already present replace the suffix."""
        if not entries:
            return
        ents = self._entries
        first = ents[0].index + 1
        if entries[-1].index < first:
            return  # everything is older than the snapshot
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - ents[0].index
        if offset < len(ents):
            del ents[offset:]
        elif offset > len(ents):
            raise UnavailableError(
                f"missing log entries: last index {self.last_index()}, appending at "
                f"{entries[0].index}"
            )
        ents.extend(entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (a snapshot received from the leader)."""
        if snap.metadata.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(snap.metadata.index)
        self._snapshot = snap
        self._entries = [Entry(term=snap.metadata.term, index=snap.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record the application's snapshot as of applied ``index``; the log is untouched
        (call ``compact`` to drop entries)."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        md = SnapshotMetadata(index=index, term=self.term(index), conf_state=conf_state)
        self._snapshot = Snapshot(metadata=md, data=data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries up to and including ``compact_index`` (must be <= applied)."""
        ents = self._entries
        offset = ents[0].index
        if compact_index <= offset:
            raise CompactedError(compact_index)
        if compact_index > self.last_index():
            raise UnavailableError(compact_index)
        k = compact_index - offset
        self._entries = [Entry(term=ents[k].term, index=ents[k].index), *ents[k + 1 :]]
