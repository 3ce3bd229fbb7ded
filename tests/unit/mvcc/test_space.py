"""A full LMDB map: the batch is aborted whole and StoreFullError raised; sync()."""

from __future__ import annotations

import pytest

from cluster.mvcc import MVCCStore, StoreFullError
from protos.etcdserverpb import rpc_pb2 as pb
from tests.unit.mvcc.ops import Writer, rng

TINY_MAP = 1 << 20
VALUE = b"v" * 4000


def fill_until_full(store: MVCCStore, writer: Writer) -> int:
    """Commit one-put batches until the map is full; returns the puts that fit."""
    n = 0
    while True:
        try:
            writer.put(b"fill%06d" % n, VALUE)
        except StoreFullError:
            return n
        n += 1


def test_full_map_aborts_the_whole_batch(tmp_path):
    store = MVCCStore(str(tmp_path / "db"), map_size=TINY_MAP)
    try:
        w = Writer(store)
        w.put(b"before", b"1")
        rev, applied, hash_before = store.current_revision, store.applied_index, store.hash_kv(0)
        batch = store.begin()
        with pytest.raises(StoreFullError) as info:
            for i in range(10_000):  # ~40 MB into a 1 MiB map: fails part way through
                batch.put(pb.PutRequest(key=b"k%05d" % i, value=VALUE))
        assert i > 10  # some puts went into the transaction before the map filled
        assert "database space exceeded" in str(info.value) and info.value.map_size == TINY_MAP
        with pytest.raises(RuntimeError):  # the batch is closed
            batch.put(pb.PutRequest(key=b"x", value=b"y"))
        # nothing of the batch is visible, the store is as before and takes new batches
        assert (store.current_revision, store.applied_index) == (rev, applied)
        assert store.range(rng(b"k", b"l", count_only=True)).count == 0
        assert store.hash_kv(0) == hash_before
        w.put(b"after", b"2")
        assert store.current_revision == rev + 1
    finally:
        store.close()


def test_full_map_between_batches_then_reopen_bigger(tmp_path):
    path = str(tmp_path / "db")
    store = MVCCStore(path, map_size=TINY_MAP)
    w = Writer(store)
    fitted = fill_until_full(store, w)
    assert fitted > 10
    assert store.current_revision == fitted + 1 and store.applied_index == fitted
    store.close()
    with MVCCStore(path, map_size=4 * TINY_MAP) as bigger:
        assert bigger.current_revision == fitted + 1
        w = Writer(bigger)
        w.index = fitted
        w.put(b"more", VALUE)
        assert bigger.range(rng(b"fill", b"film", count_only=True)).count == fitted


def test_sync_flushes(store, writer):
    writer.put(b"k", b"v")
    store.sync()  # fsync; nothing observable but that it works with and without a batch open
    with store.begin() as b:
        b.put(pb.PutRequest(key=b"k2", value=b"v"))
        store.sync()
        b.commit(writer.index + 1)
    assert store.current_revision == 3


def test_full_map_at_commit_aborts(store, writer):
    """LMDB can also report a full map from commit itself (pages for its free list)."""
    import lmdb

    class FullAtCommit:
        def __init__(self, txn):
            self._txn = txn

        def __getattr__(self, name):
            return getattr(self._txn, name)

        def commit(self):
            raise lmdb.MapFullError("mdb_txn_commit: MDB_MAP_FULL")

    writer.put(b"a", b"1")
    batch = store.begin()
    batch.put(pb.PutRequest(key=b"b", value=b"2"))
    batch._txn = FullAtCommit(batch._txn)
    with pytest.raises(StoreFullError):
        batch.commit(writer.index + 1)
    assert store.current_revision == 2 and store.range(rng(b"b")).count == 0
    writer.put(b"c", b"3")
    assert store.current_revision == 3
