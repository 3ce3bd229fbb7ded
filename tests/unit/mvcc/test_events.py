"""History for watches: commit() changes and events() catch-up, with prev_kv and tombstones."""

from __future__ import annotations

import pytest

from cluster.mvcc import CompactedError
from protos.mvccpb import kv_pb2
from tests.unit.mvcc.ops import del_op, put_op

PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE


def summary(events):
    return [(rev, e.type, e.kv.key, e.kv.value, e.prev_kv.value if e.HasField("prev_kv") else None) for rev, e in events]


@pytest.fixture
def history(writer):
    writer.put(b"a", b"1")  # 2
    writer.put(b"b", b"1")  # 3
    writer.put(b"a", b"2")  # 4
    writer.delete(b"a")  # 5
    writer.txn(success=[put_op(b"c", b"1"), put_op(b"a", b"3"), del_op(b"b")])  # 6
    return writer


def test_commit_returns_the_batch_changes_with_prev_kv(history):
    flat = [(rev, e) for rev, evs in history.events for e in evs]
    assert summary(flat) == [
        (2, PUT, b"a", b"1", None),
        (3, PUT, b"b", b"1", None),
        (4, PUT, b"a", b"2", b"1"),
        (5, DELETE, b"a", b"", b"2"),
        (6, PUT, b"c", b"1", None),
        (6, PUT, b"a", b"3", None),
        (6, DELETE, b"b", b"", b"1"),
    ]
    tomb = flat[3][1].kv
    assert (tomb.mod_revision, tomb.version, tomb.create_revision) == (5, 0, 0)


def test_events_catch_up_matches_commit_output(history):
    events, next_rev = history.store.events(b"\0", b"\0", 1, 100)
    flat = [(rev, e) for rev, evs in history.events for e in evs]
    assert events == flat and next_rev == 7


def test_events_for_one_key_and_a_range(history):
    s = history.store
    assert summary(s.events(b"a", b"", 3, 100)[0]) == [
        (4, PUT, b"a", b"2", b"1"),
        (5, DELETE, b"a", b"", b"2"),
        (6, PUT, b"a", b"3", None),
    ]
    assert [e.kv.key for _, e in s.events(b"b", b"d", 1, 100)[0]] == [b"b", b"c", b"b"]


def test_events_limit_never_splits_a_revision(history):
    s = history.store
    events, next_rev = s.events(b"\0", b"\0", 5, 2)
    assert [rev for rev, _ in events] == [5, 6, 6, 6] and next_rev == 7
    events, next_rev = s.events(b"\0", b"\0", 2, 2)
    assert [rev for rev, _ in events] == [2, 3] and next_rev == 4
    assert s.events(b"\0", b"\0", 7, 10) == ([], 7)


def test_events_after_compaction(history):
    history.compact(4)
    s = history.store
    with pytest.raises(CompactedError):
        s.events(b"\0", b"\0", 3, 10)
    events, _ = s.events(b"\0", b"\0", 4, 10)
    assert summary(events)[:2] == [(4, PUT, b"a", b"2", None), (5, DELETE, b"a", b"", b"2")]
