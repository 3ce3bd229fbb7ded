"""The history checker used by the cluster tests finds what it claims to, and only that."""

from __future__ import annotations

from tests.integration.cluster.linearizability import UNKNOWN, Op, violations

K = b"k"


def put(v, t0, t1, ok=True):
    return Op("put", K, v, t0, t1, ok)


def get(v, t0, t1):
    return Op("get", K, v, t0, t1)


def test_a_linearizable_history_passes():
    h = [put(b"a", 0, 1), get(b"a", 2, 3), put(b"b", 4, 6), get(b"a", 5, 5.5),  # concurrent
         get(b"b", 7, 8), put(b"c", 9, UNKNOWN, ok=False), get(b"b", 10, 11), get(b"c", 12, 13)]
    assert violations(h) == []


def test_stale_read_after_a_completed_overwrite_is_found():
    assert violations([put(b"a", 0, 1), put(b"b", 2, 3), get(b"a", 4, 5)])


def test_absent_key_after_a_completed_put_is_found():
    assert violations([put(b"a", 0, 1), get(None, 2, 3)])


def test_read_from_the_future_is_found():
    assert violations([get(b"a", 0, 1), put(b"a", 2, 3)])


def test_reads_going_back_in_time_are_found():
    h = [put(b"a", 0, 1), put(b"b", 2, 10), get(b"b", 3, 4), get(b"a", 5, 6)]
    assert violations(h)
