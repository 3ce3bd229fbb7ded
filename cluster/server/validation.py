"""The request checks etcd 3.4 makes in its gRPC layer, before anything is proposed.

Mirrors etcdserver/api/v3rpc/key.go (checkRangeRequest, checkPutRequest, checkDeleteRequest,
checkTxnRequest, checkIntervals). Each function raises the matching `EtcdError` or returns None.
A range_end below the key is NOT an error in etcd 3.4: such a range is simply empty.

One check comes from etcd 3.5: a Range (or a txn's range op) with a sort order or target outside
the enums is refused with "etcdserver: invalid sort option"; etcd 3.4.23 dereferences a nil
comparator there and the member crashes.
"""

from __future__ import annotations

from protos.etcdserverpb import rpc_pb2

from . import errors

MAX_LEASE_TTL = 9_000_000_000  # etcd's lease.MaxLeaseTTL, in seconds


_SORT_ORDERS = frozenset(rpc_pb2.RangeRequest.SortOrder.values())
_SORT_TARGETS = frozenset(rpc_pb2.RangeRequest.SortTarget.values())


def check_range(r: rpc_pb2.RangeRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY
    if r.sort_order not in _SORT_ORDERS or r.sort_target not in _SORT_TARGETS:
        raise errors.INVALID_SORT_OPTION


def check_put(r: rpc_pb2.PutRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY
    if r.ignore_value and r.value:
        raise errors.VALUE_PROVIDED
    if r.ignore_lease and r.lease != 0:
        raise errors.LEASE_PROVIDED


def check_delete(r: rpc_pb2.DeleteRangeRequest) -> None:
    if not r.key:
        raise errors.EMPTY_KEY


def check_txn(r: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    """Op count, empty keys (recursively), then duplicate/overlapping writes in each branch."""
    _check_txn_ops(r, max_txn_ops)
    _check_intervals(r.success)
    _check_intervals(r.failure)


def check_lease_grant(r: rpc_pb2.LeaseGrantRequest) -> None:
    if r.TTL > MAX_LEASE_TTL:
        raise errors.LEASE_TTL_TOO_LARGE


def _check_txn_ops(r: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_txn_ops:
        raise errors.TOO_MANY_OPS
    for c in r.compare:
        if not c.key:
            raise errors.EMPTY_KEY
    # etcd passes the remaining op budget (maxTxnOps - opc) down to nested txns.
    for op in (*r.success, *r.failure):
        _check_request_op(op, max_txn_ops - opc)


def _check_request_op(op: rpc_pb2.RequestOp, max_txn_ops: int) -> None:
    kind = op.WhichOneof("request")
    if kind == "request_range":
        check_range(op.request_range)
    elif kind == "request_put":
        check_put(op.request_put)
    elif kind == "request_delete_range":
        check_delete(op.request_delete_range)
    elif kind == "request_txn":
        _check_txn_ops(op.request_txn, max_txn_ops)
    else:  # an empty RequestOp: etcd answers "key not found"
        raise errors.KEY_NOT_FOUND


class _Intervals:
    """Deleted key intervals [begin, end) compared as raw bytes, as etcd's StringAffineInterval."""

    def __init__(self) -> None:
        self.spans: list[tuple[bytes, bytes]] = []

    def add_delete(self, r: rpc_pb2.DeleteRangeRequest) -> None:
        self.spans.append((r.key, r.range_end) if r.range_end else (r.key, r.key + b"\0"))

    def contains(self, key: bytes) -> bool:
        return any(begin <= key < end for begin, end in self.spans)


def _check_intervals(ops) -> tuple[set[bytes], _Intervals]:
    """etcd's checkIntervals: no key is put twice, or put and deleted, in one branch of a txn."""
    dels = _Intervals()
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            dels.add_delete(op.request_delete_range)
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _check_intervals(op.request_txn.success)
        puts_else, dels_else = _check_intervals(op.request_txn.failure)
        for k in puts_then:
            if k in puts or dels.contains(k):
                raise errors.DUPLICATE_KEY
            puts.add(k)
        for k in puts_else:
            # then/else are mutually exclusive, so a key put in both branches is fine
            if (k in puts and k not in puts_then) or dels.contains(k):
                raise errors.DUPLICATE_KEY
            puts.add(k)
        dels.spans.extend(dels_then.spans)
        dels.spans.extend(dels_else.spans)
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        k = op.request_put.key
        if k in puts or dels.contains(k):
            raise errors.DUPLICATE_KEY
        puts.add(k)
    return puts, dels


def is_txn_read_only(r: rpc_pb2.TxnRequest) -> bool:
    """True when no branch of the txn (nested ones included) writes anything."""
    for op in (*r.success, *r.failure):
        kind = op.WhichOneof("request")
        if kind in ("request_put", "request_delete_range"):
            return False
        if kind == "request_txn" and not is_txn_read_only(op.request_txn):
            return False
    return True


def is_txn_serializable(r: rpc_pb2.TxnRequest) -> bool:
    """etcd's isTxnSerializable: every op of both branches is a serializable range."""
    for op in (*r.success, *r.failure):
        if op.WhichOneof("request") != "request_range" or not op.request_range.serializable:
            return False
    return True
