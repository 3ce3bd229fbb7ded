"""Range: every option, as etcd 3.4's applyRange answers it."""

from __future__ import annotations

import pytest

from cluster.mvcc import CompactedError, FutureRevisionError
from protos.etcdserverpb import rpc_pb2 as pb
from tests.unit.mvcc.ops import kvs, rng

R = pb.RangeRequest


@pytest.fixture
def abcd(writer):
    """a(create 2, mod 5, v2, "0"), b(3, "1"), c(4, "2"), d(6, "x"); e put at 7, deleted at 8."""
    writer.put(b"a", b"3")  # 2
    writer.put(b"b", b"1")  # 3
    writer.put(b"c", b"2")  # 4
    writer.put(b"a", b"0")  # 5
    writer.put(b"d", b"x")  # 6
    writer.put(b"e", b"gone")  # 7
    writer.delete(b"e")  # 8
    assert writer.store.current_revision == 8
    return writer.store


def keys(resp) -> list[bytes]:
    return [kv.key for kv in resp.kvs]


def test_single_key_and_missing_key(abcd):
    resp = abcd.range(rng(b"a"))
    assert [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in resp.kvs] == [(b"a", b"0", 2, 5, 2)]
    assert resp.count == 1 and resp.header.revision == 8 and not resp.more
    missing = abcd.range(rng(b"zz"))
    assert missing.count == 0 and not missing.kvs and missing.header.revision == 8
    assert abcd.range(rng(b"e")).count == 0  # tombstoned


def test_interval_prefix_from_key_and_all(abcd):
    assert keys(abcd.range(rng(b"a", b"c"))) == [b"a", b"b"]
    assert keys(abcd.range(rng(b"b", b"\0"))) == [b"b", b"c", b"d"]
    assert keys(abcd.range(rng(b"\0", b"\0"))) == [b"a", b"b", b"c", b"d"]
    assert keys(abcd.range(rng(b"c", b"b"))) == []  # range_end below key: nothing
    assert keys(abcd.range(rng(b"c", b"c"))) == []


def test_limit_more_and_count(abcd):
    resp = abcd.range(rng(b"\0", b"\0", limit=2))
    assert keys(resp) == [b"a", b"b"] and resp.more and resp.count == 4
    exact = abcd.range(rng(b"\0", b"\0", limit=4))
    assert len(exact.kvs) == 4 and not exact.more and exact.count == 4


def test_read_in_the_past(abcd):
    resp = abcd.range(rng(b"\0", b"\0", revision=4))
    assert kvs(resp) == [(b"a", b"3"), (b"b", b"1"), (b"c", b"2")]
    assert resp.count == 3 and resp.header.revision == 8  # header: the store's revision
    assert kvs(abcd.range(rng(b"e", revision=7))) == [(b"e", b"gone")]
    assert abcd.range(rng(b"\0", b"\0", revision=1)).count == 0
    with pytest.raises(FutureRevisionError):
        abcd.range(rng(b"a", revision=9))


def test_compacted_revisions(abcd, writer):
    writer.compact(5)
    with pytest.raises(CompactedError):
        abcd.range(rng(b"a", revision=4))
    assert kvs(abcd.range(rng(b"\0", b"\0", revision=5))) == [(b"a", b"0"), (b"b", b"1"), (b"c", b"2")]


@pytest.mark.parametrize(
    "order,target,expected",
    [
        (R.ASCEND, R.KEY, [b"a", b"b", b"c", b"d"]),
        (R.DESCEND, R.KEY, [b"d", b"c", b"b", b"a"]),
        (R.NONE, R.KEY, [b"a", b"b", b"c", b"d"]),
        (R.DESCEND, R.MOD, [b"d", b"a", b"c", b"b"]),
        (R.ASCEND, R.MOD, [b"b", b"c", b"a", b"d"]),
        (R.NONE, R.MOD, [b"b", b"c", b"a", b"d"]),  # NONE with a non-KEY target sorts ascending
        (R.ASCEND, R.CREATE, [b"a", b"b", b"c", b"d"]),
        (R.DESCEND, R.CREATE, [b"d", b"c", b"b", b"a"]),
        (R.ASCEND, R.VALUE, [b"a", b"b", b"c", b"d"]),
        (R.DESCEND, R.VALUE, [b"d", b"c", b"b", b"a"]),
        (R.DESCEND, R.VERSION, [b"a", b"b", b"c", b"d"]),  # ties keep key order
        (R.ASCEND, R.VERSION, [b"b", b"c", b"d", b"a"]),
    ],
)
def test_sort(abcd, order, target, expected):
    assert keys(abcd.range(rng(b"\0", b"\0", sort_order=order, sort_target=target))) == expected


def test_sort_none_with_target_fetches_limit_plus_one_in_key_order(writer):
    writer.put(b"k3")  # mod 2
    writer.put(b"k2")  # mod 3
    writer.put(b"k1")  # mod 4
    s = writer.store
    # etcd: NONE order does not lift the fetch limit: it fetches k1, k2, sorts by mod, truncates
    none = s.range(rng(b"k", b"l", limit=1, sort_order=R.NONE, sort_target=R.MOD))
    assert keys(none) == [b"k2"] and none.more and none.count == 3
    asc = s.range(rng(b"k", b"l", limit=1, sort_order=R.ASCEND, sort_target=R.MOD))
    assert keys(asc) == [b"k3"] and asc.more


def test_keys_only_and_count_only(abcd):
    only_keys = abcd.range(rng(b"\0", b"\0", keys_only=True))
    assert [(kv.key, kv.value, kv.version) for kv in only_keys.kvs] == [(b"a", b"", 2), (b"b", b"", 1), (b"c", b"", 1), (b"d", b"", 1)]
    counted = abcd.range(rng(b"\0", b"\0", count_only=True, limit=1))
    assert counted.count == 4 and not counted.kvs and not counted.more


def test_revision_filters_prune_after_count(abcd):
    assert keys(abcd.range(rng(b"\0", b"\0", min_mod_revision=5))) == [b"a", b"d"]
    assert keys(abcd.range(rng(b"\0", b"\0", max_mod_revision=4))) == [b"b", b"c"]
    both = abcd.range(rng(b"\0", b"\0", min_create_revision=3, max_create_revision=4))
    assert keys(both) == [b"b", b"c"] and both.count == 4  # count is before filters (etcd)


def test_filters_lift_the_fetch_limit_then_truncate(abcd):
    resp = abcd.range(rng(b"\0", b"\0", min_mod_revision=4, limit=1))
    assert keys(resp) == [b"a"] and resp.more and resp.count == 4
    resp = abcd.range(rng(b"\0", b"\0", min_mod_revision=6, limit=1))
    assert keys(resp) == [b"d"] and not resp.more


def test_range_inside_batch_sees_batch_writes(writer):
    def both(b):
        b.put(pb.PutRequest(key=b"k", value=b"v"))
        return b.range(rng(b"k"))

    resp = writer.batch(both)
    assert kvs(resp) == [(b"k", b"v")] and resp.header.revision == 2
