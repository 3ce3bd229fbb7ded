"""Compaction: errors, what is removed and what is kept, chunked physical work."""

from __future__ import annotations

import pytest

from cluster.mvcc import CompactedError, FutureRevisionError, MVCCStore
from tests.unit.mvcc.internals import head_count, history_revisions, revision_entry_count
from tests.unit.mvcc.ops import Writer, kvs, rng


def build_history(writer):
    writer.put(b"a", b"1")  # 2
    writer.put(b"a", b"2")  # 3
    writer.put(b"b", b"1")  # 4
    writer.delete(b"b")  # 5
    writer.put(b"c", b"1")  # 6
    writer.put(b"a", b"3")  # 7


def test_compact_errors(writer):
    build_history(writer)
    with pytest.raises(FutureRevisionError):
        writer.compact(8)
    writer.compact(4)
    with pytest.raises(CompactedError):
        writer.compact(4)
    with pytest.raises(CompactedError):
        writer.compact(3)
    assert writer.store.compact_revision == 4 and writer.store.current_revision == 7


def test_compaction_removes_superseded_history_and_tombstones(writer):
    build_history(writer)
    writer.compact(6)
    s = writer.store
    # kept: a@3 (latest a at 6), c@6, and everything above 6; gone: a@2, b@4, b's tombstone @5
    assert history_revisions(s) == [(3, 0), (6, 0), (7, 0)]
    assert head_count(s) == 2 and revision_entry_count(s) == 3  # b is gone from the index
    assert kvs(s.range(rng(b"\0", b"\0", revision=6))) == [(b"a", b"2"), (b"c", b"1")]
    assert kvs(s.range(rng(b"\0", b"\0"))) == [(b"a", b"3"), (b"c", b"1")]
    for rev in (1, 2, 5):
        with pytest.raises(CompactedError):
            s.range(rng(b"a", revision=rev))
    with pytest.raises(CompactedError):
        s.events(b"a", b"", 5, 10)
    events, _ = s.events(b"\0", b"\0", 6, 10)
    assert [(rev, e.kv.key) for rev, e in events] == [(6, b"c"), (7, b"a")]
    assert events[1][1].prev_kv.value == b"2"  # the kept version is the prev of a@7


def test_compaction_keeps_the_current_version_of_unchanged_keys(writer):
    writer.put(b"k", b"v")
    for i in range(5):
        writer.put(b"other", b"%d" % i)
    writer.compact(writer.store.current_revision)
    s = writer.store
    assert kvs(s.range(rng(b"\0", b"\0"))) == [(b"k", b"v"), (b"other", b"4")]
    assert len(history_revisions(s)) == 2


def test_compaction_runs_in_chunks_and_answers_stay_the_same(tmp_path):
    s = MVCCStore(str(tmp_path / "db"), map_size=64 << 20, compaction_chunk_keys=3, compaction_keys_per_commit=3)
    try:
        w = Writer(s)
        for round_ in range(3):
            for i in range(10):
                w.put(b"k%02d" % i, b"%d" % round_)
        w.delete(b"k00", b"k05")
        w.compact(s.current_revision)
        before = s.range(rng(b"\0", b"\0"))
        assert s.compaction_pending
        steps = 0
        while s.continue_compaction():
            steps += 1
            assert s.range(rng(b"\0", b"\0")) == before
        assert steps >= 2 and not s.compaction_pending
        assert s.range(rng(b"\0", b"\0")) == before
        assert len(history_revisions(s)) == 5 and head_count(s) == 5
    finally:
        s.close()


def test_pending_compaction_survives_reopen(tmp_path):
    path = str(tmp_path / "db")
    s = MVCCStore(path, map_size=64 << 20, compaction_chunk_keys=1, compaction_keys_per_commit=1)
    w = Writer(s)
    for i in range(4):
        w.put(b"k%d" % i, b"a")
        w.put(b"k%d" % i, b"b")
    w.compact(s.current_revision)
    s.close()
    s = MVCCStore(path, map_size=64 << 20, compaction_chunk_keys=100)
    try:
        assert s.compaction_pending and s.compact_revision == 9
        assert not s.continue_compaction()
        assert len(history_revisions(s)) == 4
    finally:
        s.close()
