"""MemoryStorage and RaftLog (stable storage + unstable tail)."""
from __future__ import annotations

import pytest

from cluster.raft import (
    CompactedError,
    ConfState,
    Entry,
    MemoryStorage,
    RaftError,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDateError,
    UnavailableError,
)
from cluster.raft.log import RaftLog


def storage_with(terms, start=1) -> MemoryStorage:
    st = MemoryStorage()
    if start > 1:
        st.apply_snapshot(Snapshot(SnapshotMetadata(start - 1, terms[0], ConfState((1,)))))
        terms = terms[1:]
    st.append([Entry(t, i) for i, t in enumerate(terms, start=start)])
    return st


def test_memory_storage_index_space() -> None:
    st = storage_with([1, 1, 2, 3])
    assert (st.first_index(), st.last_index()) == (1, 4)
    assert st.term(0) == 0 and st.term(4) == 3
    with pytest.raises(UnavailableError):
        st.term(5)
    assert [e.index for e in st.entries(2, 5)] == [2, 3, 4]
    with pytest.raises(UnavailableError):
        st.entries(2, 6)


def test_memory_storage_size_limit_keeps_at_least_one() -> None:
    st = MemoryStorage()
    st.append([Entry(1, i, data=b"x" * 100) for i in range(1, 6)])
    assert len(st.entries(1, 6, max_size=10)) == 1
    assert len(st.entries(1, 6, max_size=250)) == 2
    assert len(st.entries(1, 6)) == 5


def test_memory_storage_append_replaces_the_suffix() -> None:
    st = storage_with([1, 1, 1, 1])
    st.append([Entry(2, 3), Entry(2, 4), Entry(2, 5)])
    assert [st.term(i) for i in range(1, 6)] == [1, 1, 2, 2, 2]
    with pytest.raises(UnavailableError):
        st.append([Entry(2, 9)])  # a gap


def test_memory_storage_compact_and_snapshots() -> None:
    st = storage_with([1, 1, 2, 2, 3])
    snap = st.create_snapshot(4, ConfState((1, 2)), b"state@4")
    assert snap.metadata.term == 2 and st.first_index() == 1  # snapshot alone keeps the log
    st.compact(3)
    assert st.first_index() == 4 and st.term(3) == 2
    with pytest.raises(CompactedError):
        st.entries(3, 5)
    with pytest.raises(CompactedError):
        st.compact(2)
    with pytest.raises(SnapshotOutOfDateError):
        st.create_snapshot(4, ConfState((1,)), b"")
    newer = Snapshot(SnapshotMetadata(10, 4, ConfState((1, 2, 3))), b"state@10")
    st.apply_snapshot(newer)
    assert (st.first_index(), st.last_index(), st.term(10)) == (11, 10, 4)
    assert st.initial_state()[1] == ConfState((1, 2, 3))
    with pytest.raises(SnapshotOutOfDateError):
        st.apply_snapshot(snap)


def test_raft_log_reads_across_stable_and_unstable() -> None:
    log = RaftLog(storage_with([1, 1, 2]))
    log.append([Entry(2, 4), Entry(3, 5)])
    assert log.last_index() == 5 and log.term(5) == 3 and log.term(2) == 1
    assert [e.index for e in log.slice(2, 6)] == [2, 3, 4, 5]
    assert [e.index for e in log.entries_from(4)] == [4, 5]
    log.stable_to(4, 2)
    assert [e.index for e in log.unstable.entries] == [5]


def test_raft_log_truncation_in_unstable_overrides_storage() -> None:
    st = storage_with([1, 1, 1, 1])
    log = RaftLog(st)
    assert log.maybe_append(2, 1, 0, [Entry(2, 3), Entry(2, 4), Entry(2, 5)]) == 5
    assert [log.term(i) for i in range(1, 6)] == [1, 1, 2, 2, 2]
    assert log.unstable.offset == 3
    # Entries 3.. were handed out (Ready) but replaced before being persisted:
    log.maybe_append(2, 1, 0, [Entry(3, 3)])
    log.stable_to(5, 2)  # the old Ready completes: it does not mark the new entry stable
    assert [e.term for e in log.unstable.entries] == [3]


def test_maybe_append_rejects_mismatch_and_moves_commit() -> None:
    log = RaftLog(storage_with([1, 1, 2]))
    assert log.maybe_append(3, 1, 3, []) is None  # term of 3 is 2
    assert log.maybe_append(3, 2, 10, [Entry(2, 4)]) == 4
    assert log.committed == 4  # commit never beyond the last new entry


def test_find_conflict() -> None:
    log = RaftLog(storage_with([1, 1, 2, 2, 3]))
    assert log.find_conflict([Entry(1, 1), Entry(1, 2)]) == 0
    assert log.find_conflict([Entry(2, 4), Entry(3, 5), Entry(3, 6)]) == 6
    assert log.find_conflict([Entry(1, 2), Entry(4, 3), Entry(4, 4)]) == 3
    assert log.find_conflict([Entry(5, 8)]) == 8


def test_never_overwrites_committed_entries() -> None:
    log = RaftLog(storage_with([1, 1, 2]))
    log.commit_to(3)
    with pytest.raises(RaftError):
        log.maybe_append(1, 1, 3, [Entry(5, 2)])
    with pytest.raises(RaftError):
        log.commit_to(9)


def test_committed_entries_respect_applied_and_size() -> None:
    st = MemoryStorage()
    st.append([Entry(1, i, data=b"y" * 50) for i in range(1, 11)])
    log = RaftLog(st, max_committed_size=200)
    log.commit_to(10)
    first = log.next_committed_entries()
    assert [e.index for e in first] == [1, 2]  # 2 x (50 + 21 bytes of overhead) <= 200
    log.applied_to(2)
    assert log.next_committed_entries()[0].index == 3


def test_restore_from_snapshot() -> None:
    log = RaftLog(storage_with([1, 1, 2]))
    snap = Snapshot(SnapshotMetadata(20, 5, ConfState((1, 2, 3))), b"")
    log.restore(snap)
    assert (log.first_index(), log.last_index(), log.committed, log.term(20)) == (21, 20, 20, 5)
    with pytest.raises(CompactedError):
        log.term(19)
    log.stable_snap_to(20)
    assert log.unstable.snapshot is None
