"""MVCCStore: etcd's multi-version key-value store on LMDB.

Contract: docs/mvcc-api.md. Design and figures: docs/mvcc.md. The databases: env.py.

Opening reads nothing but the meta records, so time to first answer does not grow with the data.

Threads: one writer (begin() and its WriteBatch, continue_compaction(), defragment()) and any
number of readers; each read opens its own short read transaction.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

from cluster.mvcc import hashing
from cluster.mvcc.batch import WriteBatch
from cluster.mvcc.compaction import DEFAULT_CHUNK_KEYS, DEFAULT_KEYS_PER_COMMIT
from cluster.mvcc.encoding import (
    LEASE_ID,
    LEASE_RECORD,
    META_COMPACTION,
    META_SCHEMA,
    META_SERVER_PREFIX,
    META_STATE,
    META_STATE_LAYOUT,
    SCHEMA_VERSION,
)
from cluster.mvcc.env import DATA_FILE, DEFAULT_MAP_SIZE, EnvGate, StoreEnv
from cluster.mvcc.errors import CompactedError, FutureRevisionError
from cluster.mvcc.leases import LeaseRecord, attached_keys
from cluster.mvcc.ranges import range_end_bound
from protos.etcdserverpb import rpc_pb2

__all__ = ["MVCCStore", "WriteBatch", "LeaseRecord", "DATA_FILE", "DEFAULT_MAP_SIZE"]


class MVCCStore:
    """etcd's MVCC key-value store on LMDB (contract: docs/mvcc-api.md).

    `path` is a directory, created if missing. A pending physical compaction visits
    `compaction_keys_per_commit` keys in each commit() and `compaction_chunk_keys` in each
    continue_compaction() (see compaction.py)."""

    def __init__(
        self,
        path: str,
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        compaction_chunk_keys: int = DEFAULT_CHUNK_KEYS,
        compaction_keys_per_commit: int = DEFAULT_KEYS_PER_COMMIT,
    ):
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.map_size = map_size
        self.compaction_chunk_keys = compaction_chunk_keys
        self.compaction_keys_per_commit = compaction_keys_per_commit
        env = StoreEnv(path, map_size)
        with env.env.begin(write=True) as txn:
            if txn.get(META_SCHEMA, db=env.meta) is None:
                txn.put(META_SCHEMA, SCHEMA_VERSION, db=env.meta)
                txn.put(META_STATE, META_STATE_LAYOUT.pack(1, 0, 0), db=env.meta)
            self._current, self._compact, self._applied = env.state(txn)
            self._compaction_pending = txn.get(META_COMPACTION, db=env.meta) is not None
        self._gate = EnvGate(env)
        self._batch: Optional[WriteBatch] = None
        self._closed = False

    # -- properties (values as of the last commit by the writer) ------------------------------
    @property
    def current_revision(self) -> int:
        return self._current

    @property
    def compact_revision(self) -> int:
        return self._compact

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def compaction_pending(self) -> bool:
        """True while a physical compaction has keys left to visit (see continue_compaction)."""
        return self._compaction_pending

    # -- reads: any thread ---------------------------------------------------------------------
    def _read(self, fn):
        env = self._gate.acquire()
        try:
            with env.env.begin() as txn:
                return fn(env, txn)
        finally:
            self._gate.release()

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        def read(env: StoreEnv, txn):
            current, compact, _ = env.state(txn)
            return env.reader.range(txn, req, current, compact)

        return self._read(read)

    def events(self, key: bytes, range_end: bytes, start_revision: int, limit: int) -> tuple[list, int]:
        """History for watch catch-up: ([(main revision, Event)], next revision to ask for).

        Events with main revision >= start_revision in the range (Range's range_end
        convention), in revision order, prev_kv filled when a previous version is kept. At most
        `limit` events (<= 0: no limit), except that one main revision is never split. Raises CompactedError
        when start_revision < compact revision (etcd's watch: a watch may start *at* the compact
        revision; as in etcd, events at it have no prev_kv and its tombstones are gone, whether
        or not physical compaction has reached them yet)."""

        def read(env: StoreEnv, txn):
            current, compact, _ = env.state(txn)
            if start_revision < compact:
                raise CompactedError(start_revision, compact)
            end = range_end_bound(range_end)
            return env.history_reader.events(txn, key, end, start_revision, limit, current, compact)

        return self._read(read)

    def hash(self) -> int:
        """The Hash RPC's value: CRC-32 over the replicated databases (hashing.db_hash)."""

        def read(env: StoreEnv, txn):
            current, compact, _ = env.state(txn)
            return hashing.db_hash(txn, env.hashed, current, compact)

        return self._read(read)

    def hash_kv(self, revision: int) -> tuple[int, int, int]:
        """HashKV: (hash, current revision, compact revision); revision 0 = current.

        As etcd's HashByRev: 0 < revision <= compact -> CompactedError, > current ->
        FutureRevisionError. The second element is the store's current revision (what etcd puts
        in the response header), not `revision`."""

        def read(env: StoreEnv, txn):
            current, compact, _ = env.state(txn)
            if revision > 0 and revision <= compact:
                raise CompactedError(revision, compact)
            if revision > current:
                raise FutureRevisionError(revision, current)
            rev = revision or current
            return hashing.kv_hash(txn, env.index, env.history, rev, compact), current, compact

        return self._read(read)

    def lease(self, lease_id: int) -> Optional[LeaseRecord]:
        def read(env: StoreEnv, txn):
            raw = txn.get(LEASE_ID.pack(lease_id), db=env.leases)
            return None if raw is None else LeaseRecord(lease_id, *LEASE_RECORD.unpack(raw))

        return self._read(read)

    def leases(self) -> list[LeaseRecord]:
        def read(env: StoreEnv, txn):
            with txn.cursor(db=env.leases) as cur:
                return [LeaseRecord(LEASE_ID.unpack(k)[0], *LEASE_RECORD.unpack(v)) for k, v in cur.iternext()]

        return self._read(read)

    def lease_keys(self, lease_id: int) -> list[bytes]:
        """The keys attached to the lease, sorted."""
        return self._read(lambda env, txn: attached_keys(env, txn, lease_id))

    def auth_records(self) -> list[tuple[bytes, bytes]]:
        """Every record of the auth database (WriteBatch.auth_put), in key order."""

        def read(env: StoreEnv, txn):
            with txn.cursor(db=env.auth) as cur:
                return list(cur.iternext())

        return self._read(read)

    def server_meta(self, name: bytes) -> Optional[bytes]:
        """The server record `name` as of the last commit (WriteBatch.put_server_meta), or None."""
        return self._read(lambda env, txn: txn.get(META_SERVER_PREFIX + name, db=env.meta))

    def db_size(self) -> int:
        """Bytes allocated by the database file (LMDB's high-water mark of pages)."""
        env = self._gate.acquire()
        try:
            return (env.env.info()["last_pgno"] + 1) * env.env.stat()["psize"]
        finally:
            self._gate.release()

    def db_size_in_use(self) -> int:
        """Bytes of the pages live databases use (the rest of db_size is free pages)."""

        def read(env: StoreEnv, txn):
            psize = env.env.stat()["psize"]
            pages = 2  # the two meta pages
            for st in [env.env.stat()] + [txn.stat(db) for db in env.all_dbs]:
                pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
            return pages * psize

        return self._read(read)

    def snapshot(self, dest) -> int:
        """Write a consistent, compacted copy of the database to the file object `dest` (which
        must have a fileno()). Open the copy by placing it as data.mdb in a directory. Returns
        the bytes written."""
        dest.flush()
        fd = dest.fileno()
        start = os.lseek(fd, 0, os.SEEK_CUR)
        env = self._gate.acquire()
        try:
            env.env.copyfd(fd, compact=True)
        finally:
            self._gate.release()
        end = os.lseek(fd, 0, os.SEEK_END)
        return end - start

    # -- writes: the apply thread only ----------------------------------------------------------
    def begin(self) -> WriteBatch:
        """Open the write batch (one LMDB write transaction). One at a time."""
        return self._begin(self.compaction_keys_per_commit)

    def _begin(self, compaction_keys: int) -> WriteBatch:
        if self._batch is not None:
            raise RuntimeError("a write batch is already open")
        self._batch = WriteBatch(self, self._gate.env, compaction_keys)
        return self._batch

    def _batch_finished(self, current: int, compact: int, applied: int, compaction_pending: bool) -> None:
        self._batch = None
        self._current, self._compact, self._applied = current, compact, applied
        self._compaction_pending = compaction_pending

    def continue_compaction(self) -> bool:
        """Run one chunk of a pending physical compaction in its own write transaction (no
        revision or applied index changes). Writer thread, no batch open. Returns
        compaction_pending afterwards."""
        if not self._compaction_pending:
            return False
        with self._begin(self.compaction_chunk_keys) as batch:
            batch.commit(self._applied)
        return self._compaction_pending

    def defragment(self) -> None:
        """Rewrite the database compactly (LMDB compacting copy) and swap it in. Writer thread,
        no batch open; readers wait during the swap only."""
        if self._batch is not None:
            raise RuntimeError("defragment with a write batch open")
        tmp = os.path.join(self.path, "defrag.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        self._gate.env.env.copy(tmp, compact=True)

        def replace(old: StoreEnv) -> StoreEnv:
            old.env.close()
            os.replace(os.path.join(tmp, DATA_FILE), os.path.join(self.path, DATA_FILE))
            return StoreEnv(self.path, self.map_size)

        try:
            self._gate.swap(replace)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def grow_map(self) -> int:
        """Double the LMDB map size (after a StoreFullError, so the batch can be applied again:
        every member must apply the same entries). Writer thread, no batch open; readers wait
        during the resize only. Returns the new map size."""
        if self._batch is not None:
            raise RuntimeError("grow_map with a write batch open")
        new_size = self.map_size * 2

        def resize(env: StoreEnv) -> StoreEnv:
            env.env.set_mapsize(new_size)
            return env

        self._gate.swap(resize)
        self.map_size = new_size
        return new_size

    def replace_with(self, db_path: str) -> None:
        """Make the database file `db_path` (a copy written by another store's `snapshot`, already
        fsynced) this store's data, durably; `db_path` is consumed. Used by a member installing a
        leader's Raft snapshot. Writer thread, no batch open; readers wait during the swap only."""
        if self._batch is not None:
            raise RuntimeError("replace_with with a write batch open")

        def replace(old: StoreEnv) -> StoreEnv:
            old.env.close()
            os.replace(db_path, os.path.join(self.path, DATA_FILE))
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return StoreEnv(self.path, self.map_size)

        self._gate.swap(replace)
        env = self._gate.env
        with env.env.begin() as txn:
            current, compact, applied = env.state(txn)
            pending = txn.get(META_COMPACTION, db=env.meta) is not None
        self._batch_finished(current, compact, applied, pending)

    def sync(self) -> None:
        """Flush every batch committed so far to disk (fsync of the data file; LMDB env.sync(True)).

        Commits do not fsync: the Raft log is the durability point. Whoever drops log entries
        the store has applied (the member's local log truncation / compaction of its log
        segments) must call this first, or a crash could lose applied entries that no log holds
        any more. Any thread; blocks on I/O (run it off the event loop). Safe during a batch:
        it covers what was committed before the call."""
        env = self._gate.acquire()
        try:
            env.env.sync(True)
        finally:
            self._gate.release()

    def close(self) -> None:
        """Flush the database to disk (fsync) and close it."""
        if self._closed:
            return
        if self._batch is not None:
            self._batch.abort()
        self._closed = True

        def replace(old: StoreEnv) -> StoreEnv:
            old.env.sync(True)
            old.env.close()
            return old

        self._gate.swap(replace)

    def __enter__(self) -> "MVCCStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
