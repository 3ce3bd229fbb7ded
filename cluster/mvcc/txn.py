"""Txn decisions taken before a txn writes anything (etcd 3.4 applierV3backend.Txn).

All of these read the state *before* the txn, even for nested txns:
- compare_path: evaluates the compares of the txn and, recursively, of every nested txn on the
  chosen branches; returns the chosen branch of each txn in pre-order (etcd's txnPath).
- check_puts: for a txn that writes, every put on the path must name an existing lease and, with
  ignore_value/ignore_lease, an existing key; else the whole txn fails with no effect.
- check_ranges: every range on the path must read a revision that exists (not future, not
  compacted) as of the pre-txn state.
"""

from __future__ import annotations

import lmdb

from cluster.mvcc.encoding import F_CREATE, F_LEASE, F_MOD_MAIN, F_VERSION, KEY_STATE, LEASE_ID
from cluster.mvcc.errors import CompactedError, FutureRevisionError, KeyNotFoundError, LeaseNotFoundError
from cluster.mvcc.keyindex import KeyIndex
from cluster.mvcc.ranges import RangeReader, range_end_bound
from protos.etcdserverpb import rpc_pb2
from protos.mvccpb import kv_pb2

Compare = rpc_pb2.Compare
_INT_TARGETS = {
    Compare.VERSION: ("version", F_VERSION),
    Compare.CREATE: ("create_revision", F_CREATE),
    Compare.MOD: ("mod_revision", F_MOD_MAIN),
    Compare.LEASE: ("lease", F_LEASE),
}


def _holds(result: int, op: int) -> bool:
    if op == Compare.EQUAL:
        return result == 0
    if op == Compare.NOT_EQUAL:
        return result != 0
    if op == Compare.GREATER:
        return result > 0
    if op == Compare.LESS:
        return result < 0
    return True


def _cmp(a, b) -> int:
    return (a > b) - (a < b)


class TxnPlanner:
    """Evaluates compares and pre-checks over the pre-txn state of one LMDB transaction."""

    def __init__(self, txn: lmdb.Transaction, index: KeyIndex, reader: RangeReader, leases_db, current: int, compact: int):
        self.txn = txn
        self.index = index
        self.reader = reader
        self.leases_db = leases_db
        self.current = current
        self.compact = compact

    def compare(self, c) -> bool:
        """applyCompare: every key of the range must satisfy it; an empty range compares a zero
        KeyValue, except on VALUE, which then always fails."""
        matches = self.index.scan(self.txn, c.key, range_end_bound(c.range_end), self.current)
        target = c.target
        if target == Compare.VALUE:
            if not matches:
                return False
            want = c.value if c.WhichOneof("target_union") == "value" else b""
            for _, raw in matches:
                value = kv_pb2.KeyValue.FromString(self.reader.kv_bytes(self.txn, KEY_STATE.unpack_from(raw))).value
                if not _holds(_cmp(value, want), c.result):
                    return False
            return True
        if target not in _INT_TARGETS:
            return True  # an unknown target compares nothing (as etcd's switch does)
        field, idx = _INT_TARGETS[target]
        want = getattr(c, field) if c.WhichOneof("target_union") == field else 0
        if not matches:
            return _holds(_cmp(0, want), c.result)
        return all(_holds(_cmp(KEY_STATE.unpack_from(raw)[idx], want), c.result) for _, raw in matches)

    def compare_path(self, req) -> list[bool]:
        succeeded = all(self.compare(c) for c in req.compare)
        path = [succeeded]
        for op in req.success if succeeded else req.failure:
            if op.WhichOneof("request") == "request_txn":
                path.extend(self.compare_path(op.request_txn))
        return path

    def check(self, req, path: list[bool], writes: bool) -> None:
        """checkRequests with checkPut (when the txn writes) then with checkRange."""
        if writes:
            self._walk(req, iter(path), self._check_put)
        self._walk(req, iter(path), self._check_range)

    def _walk(self, req, path, check) -> None:
        for op in req.success if next(path) else req.failure:
            kind = op.WhichOneof("request")
            if kind == "request_txn":
                self._walk(op.request_txn, path, check)
            else:
                check(kind, op)

    def _check_put(self, kind: str, op) -> None:
        if kind != "request_put":
            return
        put = op.request_put
        if put.ignore_value or put.ignore_lease:
            if not self.index.scan(self.txn, put.key, None, self.current):
                raise KeyNotFoundError(put.key)
        if put.lease and self.txn.get(LEASE_ID.pack(put.lease), db=self.leases_db) is None:
            raise LeaseNotFoundError(put.lease)

    def _check_range(self, kind: str, op) -> None:
        if kind != "request_range":
            return
        rev = op.request_range.revision
        if rev == 0:
            return
        if rev > self.current:
            raise FutureRevisionError(rev, self.current)
        if rev < self.compact:
            raise CompactedError(rev, self.compact)


def txn_writes(req) -> bool:
    """isTxnReadonly negated: any put or delete anywhere in success or failure, recursively."""
    for op in list(req.success) + list(req.failure):
        kind = op.WhichOneof("request")
        if kind in ("request_put", "request_delete_range"):
            return True
        if kind == "request_txn" and txn_writes(op.request_txn):
            return True
    return False

