"""Hash and HashKV: equal for equal histories, different otherwise, and (HashKV) independent of
physical compaction progress."""

from __future__ import annotations

import pytest

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
