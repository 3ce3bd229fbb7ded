"""Range: etcd 3.4's applyRange over the key index and history.

Semantics (etcd 3.4 etcdserver/apply.go applyRange + mvcc rangeKeys):
- range_end: empty = the single key; b"\\0" = every key >= key; else [key, range_end).
- revision <= 0 reads the current revision; > current -> FutureRevisionError;
  < compact revision -> CompactedError (reading *at* the compact revision is allowed).
- count = number of keys alive in the range at that revision, before filters and limit.
- count_only returns no kvs. keys_only clears values.
- When sort_order != NONE or any min/max filter is set, everything is fetched; otherwise at most
  limit+1 keys (in key order). Then the filters prune, then the sort, then the truncation to
  `limit` sets `more`. sort_order NONE with a target other than KEY sorts ASCEND (after the
  limit+1 fetch, as etcd does). Ties keep key order (Go's sort on such small inputs is stable;
  Python's sort is stable, and reverse=True keeps ties in key order as sort.Reverse does there).
"""

from __future__ import annotations

from typing import Optional

import lmdb

from cluster.mvcc.encoding import F_CREATE, F_MOD_MAIN, F_MOD_SUB, F_VERSION, KEY_STATE, REVISION
from cluster.mvcc.errors import CompactedError, FutureRevisionError
from cluster.mvcc.keyindex import KeyIndex
from cluster.mvcc.wire import varint
from protos.etcdserverpb import rpc_pb2
from protos.mvccpb import kv_pb2

NONE = rpc_pb2.RangeRequest.NONE
ASCEND = rpc_pb2.RangeRequest.ASCEND
DESCEND = rpc_pb2.RangeRequest.DESCEND
BY_KEY = rpc_pb2.RangeRequest.KEY
BY_VERSION = rpc_pb2.RangeRequest.VERSION
BY_CREATE = rpc_pb2.RangeRequest.CREATE
BY_MOD = rpc_pb2.RangeRequest.MOD
BY_VALUE = rpc_pb2.RangeRequest.VALUE

_STATE_FIELD = {BY_VERSION: F_VERSION, BY_CREATE: F_CREATE, BY_MOD: F_MOD_MAIN}


def range_end_bound(range_end: bytes) -> Optional[bytes]:
    """etcd's range_end convention as KeyIndex.scan's `end`: None single key, b"" from-key."""
    if not range_end:
        return None
    if range_end == b"\x00":
        return b""
    return range_end


def resolve_read_revision(revision: int, current: int, compact: int) -> int:
    """The main revision a read at `revision` sees (mvcc rangeKeys), or raise."""
    if revision > current:
        raise FutureRevisionError(revision, current)
    if revision <= 0:
        revision = current
    if revision < compact:
        raise CompactedError(revision, compact)
    return revision


_KVS_TAG = b"\x12"  # RangeResponse.kvs: field 2, length-delimited


class RangeReader:
    """Answers RangeRequests inside a given LMDB transaction (read or the batch's write txn)."""

    def __init__(self, index: KeyIndex, history: "lmdb._Database"):
        self.index = index
        self.history = history

    def kv_bytes(self, txn: lmdb.Transaction, state) -> bytes:
        """The serialized mvccpb.KeyValue stored for a key state."""
        return txn.get(REVISION.pack(state[F_MOD_MAIN], state[F_MOD_SUB]), db=self.history)

    def range(self, txn: lmdb.Transaction, req, current: int, compact: int) -> rpc_pb2.RangeResponse:
        """applyRange. `current` is the revision reported in the header and the newest readable."""
        rev = resolve_read_revision(req.revision, current, compact)
        matches = self.index.scan(txn, req.key, range_end_bound(req.range_end), rev)
        count = len(matches)
        if req.count_only:
            resp = rpc_pb2.RangeResponse(count=count)
            resp.header.revision = current
            return resp

        limit = req.limit
        filtered = bool(req.min_mod_revision or req.max_mod_revision or req.min_create_revision or req.max_create_revision)
        if req.sort_order == NONE and not filtered and limit > 0:
            matches = matches[: limit + 1]
        unpack = KEY_STATE.unpack_from
        states = [unpack(raw) for _, raw in matches]
        if filtered:
            states = _filter(states, req)

        order = req.sort_order
        target = req.sort_target
        if order == NONE and target != BY_KEY:
            order = ASCEND
        blobs: Optional[list] = None
        if order != NONE:
            if target == BY_KEY:
                if order == DESCEND:
                    states.reverse()
            elif target == BY_VALUE:
                blobs = [self.kv_bytes(txn, s) for s in states]
                values = [kv_pb2.KeyValue.FromString(b).value for b in blobs]
                idx = sorted(range(len(states)), key=values.__getitem__, reverse=order == DESCEND)
                blobs = [blobs[i] for i in idx]
            elif target in _STATE_FIELD:
                f = _STATE_FIELD[target]
                states.sort(key=lambda s: s[f], reverse=order == DESCEND)
            # an unknown target leaves key order (the server rejects it before it gets here)

        more = False
        n = len(blobs) if blobs is not None else len(states)
        if 0 < limit < n:
            more = True
            n = limit
        if blobs is None:
            get = txn.get
            history = self.history
            pack = REVISION.pack
            blobs = [get(pack(s[F_MOD_MAIN], s[F_MOD_SUB]), db=history) for s in states[:n]]
        else:
            blobs = blobs[:n]
        parts = []
        for b in blobs:
            parts.append(_KVS_TAG)
            parts.append(varint(len(b)))
            parts.append(b)
        resp = rpc_pb2.RangeResponse.FromString(b"".join(parts))
        resp.header.revision = current
        resp.count = count
        resp.more = more
        if req.keys_only:
            for kv in resp.kvs:
                kv.ClearField("value")
        return resp


def _filter(states: list, req) -> list:
    if req.max_mod_revision:
        states = [s for s in states if s[F_MOD_MAIN] <= req.max_mod_revision]
    if req.min_mod_revision:
        states = [s for s in states if s[F_MOD_MAIN] >= req.min_mod_revision]
    if req.max_create_revision:
        states = [s for s in states if s[F_CREATE] <= req.max_create_revision]
    if req.min_create_revision:
        states = [s for s in states if s[F_CREATE] >= req.min_create_revision]
    return states
