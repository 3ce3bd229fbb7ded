"""A plain in-memory model of etcd 3.4's MVCC semantics, for the model-based test.

It keeps a full copy of the key space at every revision (fine for test sizes) and answers with
the same protobuf messages the store returns, so the test compares whole responses and errors.
Its rules are written from etcd's apply.go / kvstore_txn.go, independently of the store's code.
"""

from __future__ import annotations

import struct

from dataclasses import dataclass
from typing import Callable, Optional

import google_crc32c

from cluster.mvcc import (
    CompactedError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseExistsError,
    LeaseNotFoundError,
)
from protos.etcdserverpb import rpc_pb2 as pb
from protos.mvccpb import kv_pb2

R = pb.RangeRequest
C = pb.Compare


@dataclass(frozen=True)
class KV:
    key: bytes
    create: int
    mod: int
    version: int
    value: bytes
    lease: int

    def proto(self, keys_only: bool = False) -> kv_pb2.KeyValue:
        return kv_pb2.KeyValue(
            key=self.key,
            create_revision=self.create,
            mod_revision=self.mod,
            version=self.version,
            value=b"" if keys_only else self.value,
            lease=self.lease,
        )


def in_range(k: bytes, key: bytes, range_end: bytes) -> bool:
    if not range_end:
        return k == key
    if range_end == b"\x00":
        return k >= key
    return key <= k < range_end


class _Request:
    """One request being applied: the working key space and its changes."""

    def __init__(self, base: dict, main: int):
        self.space = dict(base)
        self.main = main
        self.changes: list = []  # (event type, KV or key, prev KV or None)


class Model:
    def __init__(self):
        self.spaces = {1: {}}  # revision -> {key: KV}
        self.current = 1
        self.compact = 0
        self.leases: dict[int, tuple[int, int]] = {}
        self.log: list = []  # (main, event type, KV | key, prev KV | None), in revision order

    # -- reads -------------------------------------------------------------------------------------
    def range(self, req, current: Optional[int] = None, space_at: Optional[Callable] = None) -> pb.RangeResponse:
        current = self.current if current is None else current
        space_at = space_at or self.spaces.__getitem__
        rev = req.revision
        if rev > current:
            raise FutureRevisionError(rev, current)
        if rev <= 0:
            rev = current
        if rev < self.compact:
            raise CompactedError(rev, self.compact)
        space = space_at(rev)
        items = [space[k] for k in sorted(space) if in_range(k, req.key, req.range_end)]
        resp = pb.RangeResponse(count=len(items))
        resp.header.revision = current
        if req.count_only:
            return resp
        filtered = req.min_mod_revision or req.max_mod_revision or req.min_create_revision or req.max_create_revision
        if req.sort_order == R.NONE and not filtered and req.limit > 0:
            items = items[: req.limit + 1]
        if req.max_mod_revision:
            items = [i for i in items if i.mod <= req.max_mod_revision]
        if req.min_mod_revision:
            items = [i for i in items if i.mod >= req.min_mod_revision]
        if req.max_create_revision:
            items = [i for i in items if i.create <= req.max_create_revision]
        if req.min_create_revision:
            items = [i for i in items if i.create >= req.min_create_revision]
        order = req.sort_order
        if order == R.NONE and req.sort_target != R.KEY:
            order = R.ASCEND
        if order != R.NONE:
            field = {R.KEY: "key", R.VERSION: "version", R.CREATE: "create", R.MOD: "mod", R.VALUE: "value"}[req.sort_target]
            items = sorted(items, key=lambda i: getattr(i, field), reverse=order == R.DESCEND)
        if 0 < req.limit < len(items):
            items = items[: req.limit]
            resp.more = True
        resp.kvs.extend(i.proto(req.keys_only) for i in items)
        return resp

    def events(self, key: bytes, range_end: bytes, start: int, limit: int):
        if start < self.compact:
            raise CompactedError(start, self.compact)
        out = []
        for main, kind, kv, prev in self.log:
            if main < start:
                continue
            if len(out) >= limit and main != out[-1][0]:
                return out, main
            k = kv.key if kind == "put" else kv
            if not in_range(k, key, range_end):
                continue
            if main <= self.compact:  # only main == compact: its tombstones and prevs are gone
                if kind == "put":
                    out.append((main, kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv.proto())))
                continue
            out.append((main, self._event(main, kind, kv, prev)))
        return out, self.current + 1

    @staticmethod
    def _event(main, kind, kv, prev) -> kv_pb2.Event:
        if kind == "put":
            ev = kv_pb2.Event(type=kv_pb2.Event.PUT, kv=kv.proto())
        else:
            ev = kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=kv, mod_revision=main))
        if prev is not None:
            ev.prev_kv.CopyFrom(prev.proto())
        return ev

    def hash_kv(self, revision: int) -> tuple[int, int, int]:
        """etcd 3.4's HashKV (mvcc HashByRev), from its definition: CRC-32C over b"key", then
        over each bolt record (key: 8-byte main + "_" + 8-byte sub [+ "t" for a tombstone]; value:
        the KeyValue, a tombstone's with the key only) with main <= revision that compaction left
        in bolt, skipping those <= compact revision that are not in keep(revision), unless
        keep(revision) is empty."""
        if 0 < revision <= self.compact:
            raise CompactedError(revision, self.compact)
        if revision > self.current:
            raise FutureRevisionError(revision, self.current)
        rev = revision or self.current
        records = []  # ((main, sub), key, is_put, bolt value)
        subs: dict = {}
        for main, kind, kv, _prev in self.log:
            sub = subs[main] = subs.get(main, -1) + 1
            if kind == "put":
                records.append(((main, sub), kv.key, True, kv.proto().SerializeToString()))
            else:
                records.append(((main, sub), kv, False, kv_pb2.KeyValue(key=kv).SerializeToString()))

        def latest_puts(at: int) -> set:  # the latest revision <= at of each key alive at `at`
            latest = {}
            for r, key, is_put, _ in records:
                if r[0] <= at:
                    latest[key] = (r, is_put)
            return {r for r, is_put in latest.values() if is_put}

        in_bolt_below = latest_puts(self.compact)  # what compaction leaves at or below it
        keep = latest_puts(rev)
        h = google_crc32c.extend(0, b"key")
        for (main, sub), _key, is_put, value in records:
            if main > rev:
                break
            if main <= self.compact and ((main, sub) not in in_bolt_below or (keep and (main, sub) not in keep)):
                continue
            bolt_key = struct.pack(">Q", main) + b"_" + struct.pack(">Q", sub) + (b"" if is_put else b"t")
            h = google_crc32c.extend(h, bolt_key + value)
        return h, self.current, self.compact

    def lease_keys(self, lease_id: int) -> list[bytes]:
        space = self.spaces[self.current]
        return sorted(k for k, v in space.items() if v.lease == lease_id)

    # -- writes: each returns (response, [(main, [Event])] changes) or raises with no effect -----
    def _begin(self) -> _Request:
        return _Request(self.spaces[self.current], self.current + 1)

    def _finish(self, r: _Request) -> list:
        if not r.changes:
            return []
        self.current = r.main
        self.spaces[r.main] = r.space
        events = []
        for kind, kv, prev in r.changes:
            self.log.append((r.main, kind, kv, prev))
            events.append(self._event(r.main, kind, kv, prev))
        return [(r.main, events)]

    def _read_rev(self, r: _Request) -> int:
        return r.main if r.changes else self.current

    def put(self, req):
        if req.lease and req.lease not in self.leases:
            raise LeaseNotFoundError(req.lease)
        r = self._begin()
        resp = self._put(r, req)
        return resp, self._finish(r)

    def _put(self, r: _Request, req) -> pb.PutResponse:
        old = r.space.get(req.key)
        if (req.ignore_value or req.ignore_lease) and old is None:
            raise KeyNotFoundError(req.key)
        new = KV(
            key=req.key,
            create=old.create if old else r.main,
            mod=r.main,
            version=old.version + 1 if old else 1,
            value=old.value if req.ignore_value else req.value,
            lease=old.lease if req.ignore_lease else req.lease,
        )
        r.space[req.key] = new
        r.changes.append(("put", new, old))
        resp = pb.PutResponse()
        resp.header.revision = r.main
        if req.prev_kv and old is not None:
            resp.prev_kv.CopyFrom(old.proto())
        return resp

    def delete_range(self, req):
        r = self._begin()
        resp = self._delete(r, req)
        return resp, self._finish(r)

    def _delete(self, r: _Request, req) -> pb.DeleteRangeResponse:
        doomed = sorted(k for k in r.space if in_range(k, req.key, req.range_end))
        resp = pb.DeleteRangeResponse(deleted=len(doomed))
        for k in doomed:
            old = r.space.pop(k)
            r.changes.append(("delete", k, old))
            if req.prev_kv:
                resp.prev_kvs.add().CopyFrom(old.proto())
        resp.header.revision = r.main if r.changes else self.current
        return resp

    def txn(self, req):
        before = self.spaces[self.current]
        path = self._path(before, req)
        if _writes(req):
            self._walk(req, iter(path), lambda op: self._check_put(before, op))
        self._walk(req, iter(path), self._check_range)
        r = self._begin()
        resp = pb.TxnResponse()
        self._apply(r, req, iter(path), resp)
        resp.header.revision = r.main if r.changes else self.current
        return resp, self._finish(r)

    def _path(self, space, req) -> list[bool]:
        ok = all(self._compare(space, c) for c in req.compare)
        path = [ok]
        for op in req.success if ok else req.failure:
            if op.WhichOneof("request") == "request_txn":
                path += self._path(space, op.request_txn)
        return path

    @staticmethod
    def _compare(space, c) -> bool:
        items = [space[k] for k in sorted(space) if in_range(k, c.key, c.range_end)]
        union = c.WhichOneof("target_union")
        if c.target == C.VALUE:
            if not items:
                return False
            want, got = (c.value if union == "value" else b""), [i.value for i in items]
        else:
            name, attr = {C.VERSION: ("version", "version"), C.CREATE: ("create_revision", "create"),
                          C.MOD: ("mod_revision", "mod"), C.LEASE: ("lease", "lease")}[c.target]
            want = getattr(c, name) if union == name else 0
            got = [getattr(i, attr) for i in items] or [0]
        test = {C.EQUAL: lambda a: a == want, C.NOT_EQUAL: lambda a: a != want,
                C.GREATER: lambda a: a > want, C.LESS: lambda a: a < want}[c.result]
        return all(test(g) for g in got)

    def _walk(self, req, path, check) -> None:
        for op in req.success if next(path) else req.failure:
            if op.WhichOneof("request") == "request_txn":
                self._walk(op.request_txn, path, check)
            else:
                check(op)

    def _check_put(self, space, op) -> None:
        if op.WhichOneof("request") != "request_put":
            return
        p = op.request_put
        if (p.ignore_value or p.ignore_lease) and p.key not in space:
            raise KeyNotFoundError(p.key)
        if p.lease and p.lease not in self.leases:
            raise LeaseNotFoundError(p.lease)

    def _check_range(self, op) -> None:
        if op.WhichOneof("request") != "request_range":
            return
        rev = op.request_range.revision
        if rev and rev > self.current:
            raise FutureRevisionError(rev, self.current)
        if rev and rev < self.compact:
            raise CompactedError(rev, self.compact)

    def _apply(self, r: _Request, req, path, resp) -> None:
        ok = next(path)
        resp.succeeded = ok
        for op in req.success if ok else req.failure:
            kind = op.WhichOneof("request")
            out = resp.responses.add()
            if kind == "request_range":
                read_rev = self._read_rev(r)
                space_at = lambda rev: r.space if rev == r.main else self.spaces[rev]  # noqa: E731
                out.response_range.CopyFrom(self.range(op.request_range, read_rev, space_at))
            elif kind == "request_put":
                out.response_put.CopyFrom(self._put(r, op.request_put))
            elif kind == "request_delete_range":
                out.response_delete_range.CopyFrom(self._delete(r, op.request_delete_range))
            elif kind == "request_txn":
                out.response_txn.header.SetInParent()
                self._apply(r, op.request_txn, path, out.response_txn)

    def compact_to(self, revision: int) -> None:
        if revision <= self.compact:
            raise CompactedError(revision, self.compact)
        if revision > self.current:
            raise FutureRevisionError(revision, self.current)
        self.compact = revision

    def lease_grant(self, lease_id: int, ttl: int) -> None:
        if lease_id in self.leases:
            raise LeaseExistsError(lease_id)
        self.leases[lease_id] = (ttl, 0)

    def lease_revoke(self, lease_id: int):
        if lease_id not in self.leases:
            raise LeaseNotFoundError(lease_id)
        r = self._begin()
        for k in self.lease_keys(lease_id):
            r.changes.append(("delete", k, r.space.pop(k)))
        del self.leases[lease_id]
        changes = self._finish(r)
        return self.current, changes

    def lease_checkpoint(self, lease_id: int, remaining: int) -> None:
        if lease_id in self.leases:
            self.leases[lease_id] = (self.leases[lease_id][0], remaining)


def _writes(req) -> bool:
    for op in list(req.success) + list(req.failure):
        kind = op.WhichOneof("request")
        if kind in ("request_put", "request_delete_range") or (kind == "request_txn" and _writes(op.request_txn)):
            return True
    return False
