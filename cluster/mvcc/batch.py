"""WriteBatch: the apply thread's write transaction (put, delete_range, txn, compact, leases,
commit). Opened by MVCCStore.begin()."""

from __future__ import annotations

import functools
from typing import Optional

import lmdb

from cluster.mvcc.encoding import (
    ALIVE,
    F_CREATE,
    F_FLAGS,
    F_LEASE,
    F_VERSION,
    KEY_STATE,
    LEASE_ID,
    LEASE_RECORD,
    META_COMPACTION,
    META_COMPACTION_LAYOUT,
    META_SERVER_PREFIX,
    META_STATE,
    META_STATE_LAYOUT,
    REVISION,
    key_ref,
)
from cluster.mvcc.env import StoreEnv
from cluster.mvcc.errors import (
    CompactedError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseExistsError,
    LeaseNotFoundError,
    StoreFullError,
)
from cluster.mvcc.keyindex import state_flags
from cluster.mvcc.leases import attached_keys
from cluster.mvcc.ranges import range_end_bound
from cluster.mvcc.txn import TxnPlanner, txn_writes
from cluster.mvcc.wire import encode_event, encode_kv
from protos.etcdserverpb import rpc_pb2
from protos.mvccpb import kv_pb2


def _space_checked(method):
    """Wrap a WriteBatch method: a full LMDB map aborts the whole batch (LMDB cannot go on with a
    transaction after MDB_MAP_FULL anyway) and raises StoreFullError; a closed batch raises
    RuntimeError."""

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        if self._txn is None:
            raise RuntimeError("the write batch has been committed or aborted")
        try:
            return method(self, *args, **kwargs)
        except lmdb.MapFullError as e:
            self.abort()
            raise StoreFullError(self._store.map_size) from e

    return checked


class WriteBatch:
    """One LMDB write transaction of the apply thread: requests applied in log order, then
    commit(applied_index). Context manager: on leaving the block, a batch not yet committed is
    aborted (so an exception discards it); it never commits by itself.

    Every request (put, delete_range, txn, lease_revoke) that changes something takes the next
    main revision; its writes take sub revisions 0, 1, ... A request that raises has no effect:
    every error is detected before the request writes anything (txn: by TxnPlanner's pre-checks;
    the server rejects txns that write one key twice, as etcd does, so no op can fail midway).
    The one exception is a full LMDB map (StoreFullError): it aborts the whole batch."""

    def __init__(self, store, env: StoreEnv, compaction_keys: int):
        # store: the MVCCStore that opened the batch; commit()/abort() report back to it.
        # compaction_keys: how many keys of a pending physical compaction commit() visits.
        self._store = store
        self._compaction_keys = compaction_keys
        self._env = env
        self._txn = env.env.begin(write=True)
        self._rev, self._compact, _ = env.state(self._txn)
        raw = self._txn.get(META_COMPACTION, db=env.meta)
        self._compaction: Optional[tuple[int, bytes]] = (
            None if raw is None else (META_COMPACTION_LAYOUT.unpack_from(raw)[0], raw[META_COMPACTION_LAYOUT.size :])
        )
        self._changes: list = []  # (main revision, [serialized Event]) of the batch so far
        # the request being applied: its main revision and its serialized Events
        self._main = 0
        self._events: list = []

    def __enter__(self) -> "WriteBatch":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._txn is not None:  # an exception, or a batch neither committed nor aborted
            self.abort()

    # -- requests ------------------------------------------------------------------------------
    def _start(self) -> None:
        self._main = self._rev + 1
        self._events = []

    def _finish(self) -> int:
        """End the request; returns the revision it is visible at."""
        if self._events:
            self._rev = self._main
            self._changes.append((self._main, self._events))
            self._events = []
        return self._rev

    def _read_revision(self) -> int:
        """The revision a read inside the current request sees (its own writes included)."""
        return self._main if self._events else self._rev

    @_space_checked
    def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        """Put with lease, prev_kv, ignore_value, ignore_lease. Raises LeaseNotFoundError,
        KeyNotFoundError (ignore_* on a missing key)."""
        if req.lease and self._txn.get(LEASE_ID.pack(req.lease), db=self._env.leases) is None:
            raise LeaseNotFoundError(req.lease)
        self._start()
        resp = self._put(req)
        self._finish()
        return resp

    def _put(self, req) -> rpc_pb2.PutResponse:
        txn, env = self._txn, self._env
        key = req.key
        ref = key_ref(key)
        head = env.index.head(txn, ref)
        main, sub = self._main, len(self._events)
        lease = req.lease
        if head is not None and head[F_FLAGS] & ALIVE:
            prev = env.reader.kv_bytes(txn, head)
            create, version, old_lease = head[F_CREATE], head[F_VERSION] + 1, head[F_LEASE]
            value = kv_pb2.KeyValue.FromString(prev).value if req.ignore_value else req.value
            if req.ignore_lease:
                lease = old_lease
        else:
            if req.ignore_value or req.ignore_lease:
                raise KeyNotFoundError(key)
            prev = None
            create, version, old_lease = main, 1, 0
            value = req.value
        kv = encode_kv(key, create, main, version, value, lease)
        txn.put(REVISION.pack(main, sub), kv, db=env.history, append=True)
        env.index.record(txn, ref, key, (state_flags(key, True), main, sub, create, version, lease))
        if old_lease != lease:
            if old_lease:
                txn.delete(LEASE_ID.pack(old_lease) + ref, db=env.lease_keys)
            if lease:
                txn.put(LEASE_ID.pack(lease) + ref, key, db=env.lease_keys)
        self._events.append(encode_event(False, kv, prev))
        resp = rpc_pb2.PutResponse()
        resp.header.revision = main
        if req.prev_kv and prev is not None:
            resp.prev_kv.ParseFromString(prev)
        return resp

    @_space_checked
    def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        """DeleteRange with prev_kv; `deleted` counts the keys removed."""
        self._start()
        resp = self._delete_range(req.key, req.range_end, req.prev_kv)
        self._finish()
        return resp

    def _delete_range(self, key: bytes, range_end: bytes, want_prev: bool) -> rpc_pb2.DeleteRangeResponse:
        matches = self._env.index.scan(self._txn, key, range_end_bound(range_end), self._read_revision())
        resp = rpc_pb2.DeleteRangeResponse()
        for ref, raw in matches:
            prev = self._delete_key(ref, KEY_STATE.unpack_from(raw))
            if want_prev:
                resp.prev_kvs.add().ParseFromString(prev)
        resp.deleted = len(matches)
        resp.header.revision = self._main if self._events else self._rev
        return resp

    def _delete_key(self, ref: bytes, state) -> bytes:
        """Tombstone one alive key (its ref and current state) at the current request; returns
        the serialized KeyValue it had."""
        txn, env = self._txn, self._env
        main, sub = self._main, len(self._events)
        prev = env.reader.kv_bytes(txn, state)
        key = kv_pb2.KeyValue.FromString(prev).key
        tombstone = encode_kv(key, 0, main, 0, b"", 0)
        txn.put(REVISION.pack(main, sub), tombstone, db=env.history, append=True)
        env.index.record(txn, ref, key, (state_flags(key, False), main, sub, 0, 0, 0))
        if state[F_LEASE]:
            txn.delete(LEASE_ID.pack(state[F_LEASE]) + ref, db=env.lease_keys)
        self._events.append(encode_event(True, tombstone, prev))
        return prev

    @_space_checked
    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """A Range inside the batch: sees everything applied so far."""
        return self._env.reader.range(self._txn, req, self._rev, self._compact)

    @_space_checked
    def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """Txn: compares (incl. over a range) decide each branch, nested txns included, all
        against the state before the txn; then the chosen ops run in order, reads seeing the
        txn's earlier writes; the whole txn takes one main revision if it writes. Raises (with
        no effect) LeaseNotFoundError / KeyNotFoundError for a put on the path, or
        FutureRevisionError / CompactedError for a range on the path."""
        env = self._env
        planner = TxnPlanner(self._txn, env.index, env.reader, env.leases, self._rev, self._compact)
        path = planner.compare_path(req)
        planner.check(req, path, txn_writes(req))
        self._start()
        resp = rpc_pb2.TxnResponse()
        self._apply_txn(req, iter(path), resp)
        resp.header.revision = self._finish()
        return resp

    def _apply_txn(self, req, path, resp) -> None:
        succeeded = next(path)
        resp.succeeded = succeeded
        for op in req.success if succeeded else req.failure:
            kind = op.WhichOneof("request")
            out = resp.responses.add()
            if kind == "request_range":
                out.response_range.CopyFrom(
                    self._env.reader.range(self._txn, op.request_range, self._read_revision(), self._compact)
                )
            elif kind == "request_put":
                out.response_put.CopyFrom(self._put(op.request_put))
            elif kind == "request_delete_range":
                d = op.request_delete_range
                out.response_delete_range.CopyFrom(self._delete_range(d.key, d.range_end, d.prev_kv))
            elif kind == "request_txn":
                nested = out.response_txn
                nested.header.SetInParent()  # etcd gives nested txn responses an empty header
                self._apply_txn(op.request_txn, path, nested)

    @_space_checked
    def compact(self, revision: int) -> None:
        """Compact at `revision`: raises CompactedError if <= the compact revision,
        FutureRevisionError if > the current revision. Reads below it fail from now on; the
        history is removed in chunks (compaction.py), the first at commit()."""
        if revision <= self._compact:
            raise CompactedError(revision, self._compact)
        if revision > self._rev:
            raise FutureRevisionError(revision, self._rev)
        self._compact = revision
        self._compaction = (revision, b"")

    # -- leases ----------------------------------------------------------------------------------
    @_space_checked
    def lease_grant(self, lease_id: int, ttl: int) -> None:
        """Record a granted lease. Raises LeaseExistsError if the id is taken."""
        k = LEASE_ID.pack(lease_id)
        if not self._txn.put(k, LEASE_RECORD.pack(ttl, 0), db=self._env.leases, overwrite=False):
            raise LeaseExistsError(lease_id)

    @_space_checked
    def lease_revoke(self, lease_id: int) -> int:
        """Delete the lease and, in one main revision, its keys (in key order). Returns the
        revision after it. Raises LeaseNotFoundError."""
        txn, env = self._txn, self._env
        k = LEASE_ID.pack(lease_id)
        if txn.get(k, db=env.leases) is None:
            raise LeaseNotFoundError(lease_id)
        self._start()
        for key in attached_keys(env, txn, lease_id):
            ref = key_ref(key)
            state = env.index.head(txn, ref)
            if state is not None and state[F_FLAGS] & ALIVE:
                self._delete_key(ref, state)
        txn.delete(k, db=env.leases)
        return self._finish()

    @_space_checked
    def lease_checkpoint(self, lease_id: int, remaining_ttl: int) -> None:
        """Record a lease's remaining TTL; an unknown lease is ignored (as etcd's lessor does)."""
        k = LEASE_ID.pack(lease_id)
        raw = self._txn.get(k, db=self._env.leases)
        if raw is not None:
            ttl, _ = LEASE_RECORD.unpack(raw)
            self._txn.put(k, LEASE_RECORD.pack(ttl, remaining_ttl), db=self._env.leases)

    def lease_keys(self, lease_id: int) -> list[bytes]:
        """The keys attached to the lease as of this batch, sorted (auth's LeaseRevoke check)."""
        return attached_keys(self._env, self._txn, lease_id)

    # -- auth records (opaque: cluster/server/auth/store.py owns their meaning) --------------------
    @_space_checked
    def auth_put(self, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._env.auth)

    @_space_checked
    def auth_delete(self, key: bytes) -> None:
        self._txn.delete(key, db=self._env.auth)

    @_space_checked
    def put_server_meta(self, name: bytes, value: bytes | None) -> None:
        """Set (None: delete) a record of the server's own state, committed with this batch and
        its applied index, and carried by snapshot() copies (e.g. the member's alarms). It takes
        no revision and is not hashed."""
        key = META_SERVER_PREFIX + name
        if value is None:
            self._txn.delete(key, db=self._env.meta)
        else:
            self._txn.put(key, value, db=self._env.meta)

    # -- end of batch ------------------------------------------------------------------------------
    @_space_checked
    def commit(self, applied_index: int) -> list[tuple[int, list]]:
        """Store applied_index with the data, run one chunk of pending physical compaction,
        commit (no fsync), and return the batch's changes: [(main revision, [Event])] in order,
        prev_kv filled where there was a previous version."""
        txn, env = self._txn, self._env
        if self._compaction is not None:
            target, cursor = self._compaction
            cursor = env.compaction.step(txn, target, cursor, self._compaction_keys)
            self._compaction = None if cursor is None else (target, cursor)
        if self._compaction is None:
            txn.delete(META_COMPACTION, db=env.meta)
        else:
            target, cursor = self._compaction
            txn.put(META_COMPACTION, META_COMPACTION_LAYOUT.pack(target) + cursor, db=env.meta)
        txn.put(META_STATE, META_STATE_LAYOUT.pack(self._rev, self._compact, applied_index), db=env.meta)
        txn.commit()
        self._txn = None
        self._store._batch_finished(self._rev, self._compact, applied_index, self._compaction is not None)
        parse = kv_pb2.Event.FromString
        return [(main, [parse(e) for e in events]) for main, events in self._changes]

    def abort(self) -> None:
        """Discard everything done in the batch."""
        if self._txn is not None:
            txn, self._txn = self._txn, None
            try:
                txn.abort()
            except lmdb.Error:  # a failed commit has already ended it
                pass
            store = self._store
            store._batch_finished(store._current, store._compact, store._applied, store._compaction_pending)
