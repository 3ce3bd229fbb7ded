"""Hash and HashKV: equal for equal histories, different otherwise, (HashKV) independent of
physical compaction progress, and (HashKV) equal to etcd 3.4's for the same operations."""

from __future__ import annotations

import pytest

import google_crc32c

from cluster.mvcc import CompactedError, FutureRevisionError, MVCCStore
from tests.unit.mvcc.ops import Writer, cmp, put_op


def apply_script(w: Writer, variant: bytes = b"v") -> None:
    w.grant(3)
    for i in range(6):
        w.put(b"key%d" % i, variant + b"%d" % i, lease=3 if i % 2 else 0)
    w.delete(b"key1", b"key3")
    w.txn(compare=[cmp(b"key4", "VERSION", "EQUAL", 1)], success=[put_op(b"key4", b"t")])
    w.put(b"key5", b"again")


@pytest.fixture
def two_stores(tmp_path):
    stores = [MVCCStore(str(tmp_path / n), map_size=64 << 20) for n in ("one", "two")]
    yield stores
    for s in stores:
        s.close()


def test_equal_histories_hash_equal(two_stores):
    a, b = two_stores
    apply_script(Writer(a))
    apply_script(Writer(b))
    assert a.hash() == b.hash()
    for rev in (0, 3, 6, a.current_revision):
        assert a.hash_kv(rev) == b.hash_kv(rev)
    assert a.hash_kv(0)[1:] == (a.current_revision, 0)


def test_different_histories_hash_differently(two_stores):
    a, b = two_stores
    apply_script(Writer(a))
    apply_script(Writer(b), variant=b"w")
    assert a.hash() != b.hash()
    assert a.hash_kv(0)[0] != b.hash_kv(0)[0]
    assert a.hash_kv(1)[0] == b.hash_kv(1)[0]  # both empty at revision 1


def test_hash_kv_ignores_physical_compaction_progress(tmp_path):
    fast = MVCCStore(str(tmp_path / "fast"), map_size=64 << 20)
    slow = MVCCStore(str(tmp_path / "slow"), map_size=64 << 20, compaction_chunk_keys=1, compaction_keys_per_commit=1)
    try:
        for s in (fast, slow):
            w = Writer(s)
            apply_script(w)
            w.compact(8)
            w.put(b"after", b"compaction")
        assert not fast.compaction_pending and slow.compaction_pending
        assert fast.hash_kv(0) == slow.hash_kv(0)
        while slow.continue_compaction():
            pass
        assert fast.hash_kv(0) == slow.hash_kv(0) and fast.hash() == slow.hash()
    finally:
        fast.close()
        slow.close()


def test_hash_kv_errors(writer):
    apply_script(writer)
    writer.compact(5)
    with pytest.raises(CompactedError):
        writer.store.hash_kv(5)
    with pytest.raises(FutureRevisionError):
        writer.store.hash_kv(writer.store.current_revision + 1)
    assert writer.store.hash_kv(6)[2] == 5


# -- HashKV equals etcd 3.4's --------------------------------------------------------------------
# Each script runs on a fresh store (revision 1). `("hash", rev, value)` asserts hash_kv(rev)[0]
# == value. The values were measured on the real etcd 3.4.23 (single member, fresh --data-dir):
# the same operations through `etcdctl put/del [--prefix]/compaction --physical`, then
# `etcdctl endpoint hashkv [--rev N]` (rev 0 = no --rev). The first two are interop finding F1's.
ETCD_3_4_23_SCRIPTS = {
    "uncompacted": [
        ("put", b"m/a", b"1"), ("put", b"m/b", b"2"), ("put", b"m/a", b"3"), ("del", b"m/b"),
        ("hash", 0, 1688326360), ("hash", 4, 2034862446),
    ],
    "compacted": [
        ("put", b"m/a", b"1"), ("put", b"m/b", b"2"), ("put", b"m/a", b"3"), ("del", b"m/b"),
        ("put", b"m/c", b"4"), ("del", b"m/a"), ("compact", 4),
        ("hash", 0, 3525795625), ("hash", 5, 2680820769), ("hash", 6, 758476058),
        ("compact", 6),
        ("hash", 0, 2176755481), ("hash", 7, 2176755481),
        ("put", b"m/d", b"7"), ("put", b"m/e", b"8"), ("del_prefix", b"m/"),  # 3 sub revisions
        ("hash", 0, 1208822722),
        ("put", b"m/f", b"9"), ("compact", 10),
        ("hash", 0, 892187693),
    ],
    # no key alive at the hashed revision: etcd then also hashes the records kept at the compact
    # revision (its `len(keep) > 0` condition)
    "compacted_empty_keep": [
        ("put", b"q/x", b"1"), ("put", b"q/y", b"2"), ("compact", 3), ("del", b"q/x"), ("del", b"q/y"),
        ("hash", 0, 1779120055), ("hash", 4, 878592426),
        ("put", b"q/z", b"3"),
        ("hash", 0, 2633166308), ("hash", 5, 1779120055), ("hash", 4, 878592426),
    ],
    # leases (field 6 of KeyValue, incl. a 9-byte varint), an empty value, a 300-byte value (2-byte
    # length varint), ignore_value, revoke. Lease ids chosen through etcd's gRPC LeaseGrant(ID=...)
    # (etcdctl cannot choose one), then the same puts and HashKV over gRPC.
    "leases": [
        ("grant", 0x1234), ("grant", 0x7FFFFFFFFFFFFFF0),
        ("put", b"l/a", b"1", {"lease": 0x1234}), ("put", b"l/b", b"", {"lease": 0x7FFFFFFFFFFFFFF0}),
        ("put", b"l/c", b"x" * 300), ("put", b"l/a", b"", {"ignore_value": True}),
        ("revoke", 0x7FFFFFFFFFFFFFF0),
        ("hash", 0, 2208215769), ("hash", 3, 3868209695), ("hash", 4, 2979319674), ("hash", 5, 4016575667),
    ],
}


@pytest.mark.parametrize("name", sorted(ETCD_3_4_23_SCRIPTS))
@pytest.mark.parametrize("chunk", [1000, 1])  # 1: hashes taken while physical compaction is pending
def test_hash_kv_equals_etcd_3_4(tmp_path, name, chunk):
    store = MVCCStore(str(tmp_path / "db"), map_size=16 << 20, compaction_keys_per_commit=chunk)
    try:
        w = Writer(store)
        for op, *args in ETCD_3_4_23_SCRIPTS[name]:
            if op == "put":
                w.put(*args[:2], **(args[2] if len(args) > 2 else {}))
            elif op == "grant":
                w.grant(args[0], 600)
            elif op == "revoke":
                w.revoke(args[0])
            elif op == "del":
                w.delete(*args)
            elif op == "del_prefix":
                w.delete(args[0], args[0][:-1] + bytes([args[0][-1] + 1]))
            elif op == "compact":
                w.compact(*args)
            else:
                rev, expected = args
                assert store.hash_kv(rev)[0] == expected, (op, args)
    finally:
        store.close()


def test_crc32c_is_castagnoli_and_compiled():
    assert google_crc32c.extend(0, b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert google_crc32c.implementation == "c"  # the pure-Python build would make HashKV ~25x slower
