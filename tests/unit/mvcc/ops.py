"""Terse request builders and a one-request-per-batch writer for the MVCC store tests."""

from __future__ import annotations

from protos.etcdserverpb import rpc_pb2 as pb

Compare = pb.Compare


def rng(key: bytes, range_end: bytes = b"", **kw) -> pb.RangeRequest:
    return pb.RangeRequest(key=key, range_end=range_end, **kw)


def put_op(key: bytes, value: bytes = b"", **kw) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


def del_op(key: bytes, range_end: bytes = b"", **kw) -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, range_end=range_end, **kw))


def range_op(key: bytes, range_end: bytes = b"", **kw) -> pb.RequestOp:
    return pb.RequestOp(request_range=rng(key, range_end, **kw))


def txn_op(req: pb.TxnRequest) -> pb.RequestOp:
    return pb.RequestOp(request_txn=req)


def cmp(key: bytes, target: str, result: str, value, range_end: bytes = b"") -> pb.Compare:
    """cmp(b"k", "VERSION", "EQUAL", 0); target in VALUE/VERSION/CREATE/MOD/LEASE."""
    field = {"VALUE": "value", "VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision", "LEASE": "lease"}[target]
    return pb.Compare(key=key, range_end=range_end, target=getattr(Compare, target), result=getattr(Compare, result), **{field: value})


def kvs(resp) -> list[tuple[bytes, bytes]]:
    return [(kv.key, kv.value) for kv in resp.kvs]


class Writer:
    """Applies each call in its own batch, committing with the next applied index."""

    def __init__(self, store):
        self.store = store
        self.index = 0
        self.events: list = []

    def batch(self, fn):
        with self.store.begin() as b:
            result = fn(b)
            self.index += 1
            self.events.extend(b.commit(self.index))
        return result

    def put(self, key: bytes, value: bytes = b"", **kw) -> pb.PutResponse:
        return self.batch(lambda b: b.put(pb.PutRequest(key=key, value=value, **kw)))

    def delete(self, key: bytes, range_end: bytes = b"", **kw) -> pb.DeleteRangeResponse:
        return self.batch(lambda b: b.delete_range(pb.DeleteRangeRequest(key=key, range_end=range_end, **kw)))

    def txn(self, compare=(), success=(), failure=()) -> pb.TxnResponse:
        req = pb.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        return self.batch(lambda b: b.txn(req))

    def compact(self, revision: int) -> None:
        self.batch(lambda b: b.compact(revision))

    def grant(self, lease_id: int, ttl: int = 60) -> None:
        self.batch(lambda b: b.lease_grant(lease_id, ttl))

    def revoke(self, lease_id: int) -> int:
        return self.batch(lambda b: b.lease_revoke(lease_id))
