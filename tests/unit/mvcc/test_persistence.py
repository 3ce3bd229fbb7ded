"""Restart, applied index, snapshot and defragment."""

from __future__ import annotations

import os
import threading

import lmdb

import cluster.mvcc.env as env_module
from cluster.mvcc import MVCCStore
from protos.etcdserverpb import rpc_pb2 as pb
from tests.unit.mvcc.ops import Writer, kvs, rng

MAP = 128 << 20


def load(store, n: int, start: int = 0) -> None:
    with store.begin() as b:
        for i in range(start, start + n):
            b.put(pb.PutRequest(key=b"key%08d" % i, value=b"value%d" % i))
        b.commit(store.applied_index + 1)


def test_reopen_keeps_revisions_applied_index_and_data(tmp_path):
    path = str(tmp_path / "db")
    s = MVCCStore(path, map_size=MAP)
    w = Writer(s)
    w.put(b"a", b"1")
    w.put(b"a", b"2")
    w.delete(b"a")
    w.put(b"b", b"3")
    w.compact(3)
    before = (s.current_revision, s.compact_revision, s.applied_index, s.hash(), s.hash_kv(0))
    answers = [s.range(rng(b"\0", b"\0", revision=r)) for r in (3, 4, 5)]
    s.close()
    s = MVCCStore(path, map_size=MAP)
    try:
        assert (s.current_revision, s.compact_revision, s.applied_index, s.hash(), s.hash_kv(0)) == before
        assert before[:3] == (5, 3, 5)
        assert [s.range(rng(b"\0", b"\0", revision=r)) for r in (3, 4, 5)] == answers
        Writer(s).put(b"c")
        assert s.current_revision == 6
    finally:
        s.close()


def test_applied_index_is_committed_with_the_batch(store):
    with store.begin() as b:
        b.put(pb.PutRequest(key=b"k"))
        b.commit(41)
    assert store.applied_index == 41
    with store.begin() as b:
        b.put(pb.PutRequest(key=b"k"))
        b.abort()
    assert store.applied_index == 41 and store.current_revision == 2
    with store.begin() as b:  # an entry that changes nothing still advances the applied index
        b.commit(42)
    assert store.applied_index == 42 and store.current_revision == 2


class _RecordingTxn:
    def __init__(self, txn, calls):
        self._txn, self._calls = txn, calls

    def __getattr__(self, name):
        attr = getattr(self._txn, name)
        if callable(attr):

            def record(*args, **kwargs):
                self._calls.append((name, args[:1]))
                return attr(*args, **kwargs)

            return record
        return attr

    def __enter__(self):
        self._txn.__enter__()
        return self

    def __exit__(self, *exc):
        return self._txn.__exit__(*exc)


class _RecordingEnv:
    def __init__(self, env, calls):
        self._env, self._calls = env, calls

    def __getattr__(self, name):
        return getattr(self._env, name)

    def begin(self, *args, **kwargs):
        return _RecordingTxn(self._env.begin(*args, **kwargs), self._calls)


def _calls_made_by_open(path, monkeypatch) -> list:
    calls: list = []
    real_open = lmdb.open
    monkeypatch.setattr(env_module.lmdb, "open", lambda *a, **kw: _RecordingEnv(real_open(*a, **kw), calls))
    s = MVCCStore(path, map_size=MAP)
    monkeypatch.setattr(env_module.lmdb, "open", real_open)
    opened = list(calls)
    assert s.range(rng(b"key00000000")).count in (0, 1)
    s.close()
    return opened


def test_open_reads_only_metadata(tmp_path, monkeypatch):
    """Structural: opening does a fixed handful of point reads of the meta database, no cursor
    and no scan, whatever the size of the store."""
    small, big = str(tmp_path / "small"), str(tmp_path / "big")
    for path, n in ((small, 10), (big, 5000)):
        s = MVCCStore(path, map_size=MAP)
        load(s, n)
        s.close()
    calls_small = _calls_made_by_open(small, monkeypatch)
    calls_big = _calls_made_by_open(big, monkeypatch)
    assert calls_small == calls_big
    assert {name for name, _ in calls_big} == {"get"}
    assert len(calls_big) <= 4


def test_snapshot_is_a_store(tmp_path, store):
    w = Writer(store)
    w.grant(3, ttl=9)
    w.put(b"a", b"1", lease=3)
    w.put(b"b", b"2")
    target = tmp_path / "restored"
    target.mkdir()
    with open(target / "data.mdb", "wb") as f:
        written = store.snapshot(f)
    assert written == os.path.getsize(target / "data.mdb") > 0
    w.put(b"c", b"after the snapshot")
    restored = MVCCStore(str(target), map_size=MAP)
    try:
        assert kvs(restored.range(rng(b"\0", b"\0"))) == [(b"a", b"1"), (b"b", b"2")]
        assert (restored.current_revision, restored.applied_index) == (3, 3)
        assert restored.lease_keys(3) == [b"a"]
        assert restored.hash_kv(3)[0] == store.hash_kv(3)[0]
    finally:
        restored.close()


def test_defragment_shrinks_and_keeps_data(tmp_path):
    s = MVCCStore(str(tmp_path / "db"), map_size=MAP)
    try:
        load(s, 3000)
        w = Writer(s)
        w.delete(b"key00000100", b"key00002900")
        w.compact(s.current_revision)
        while s.continue_compaction():
            pass
        before = s.range(rng(b"\0", b"\0"))
        hash_before = s.hash()
        size_before = s.db_size()
        assert s.db_size_in_use() < size_before

        stop = threading.Event()
        reader_errors: list = []

        def read_constantly():
            while not stop.is_set():
                try:
                    assert s.range(rng(b"\0", b"\0", count_only=True)).count == 200
                except Exception as exc:  # noqa: BLE001 - reported below
                    reader_errors.append(exc)
                    return

        reader = threading.Thread(target=read_constantly)
        reader.start()
        try:
            s.defragment()
        finally:
            stop.set()
            reader.join()
        assert reader_errors == []
        assert s.range(rng(b"\0", b"\0")) == before and s.hash() == hash_before
        assert s.db_size() < size_before
        w.put(b"after", b"defrag")
        assert s.range(rng(b"after")).count == 1
    finally:
        s.close()
