"""Concurrent clients that record every operation: KV, watch, lease and compaction traffic.

Threads with synchronous gRPC stubs (one channel per client, re-made on failover): simple, and
the interleavings come from the server, not from our scheduler. Each client fails over to the
next endpoint on any error. Write errors are recorded as "maybe"; failed reads are not recorded.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Optional

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from protos.mvccpb import kv_pb2

from .history import CAS, DELETE, GET, PUT, RANGE, SGET, History, Op

OP_TIMEOUT = 2.0


def prefix_end(prefix: bytes) -> bytes:
    b = bytearray(prefix)
    b[-1] += 1
    return bytes(b)


def never_sent(e: grpc.RpcError) -> bool:
    """True when the call failed before reaching any server: no connection could be made (the
    channel answered UNAVAILABLE "failed to connect to all addresses" itself). Such a write has
    certainly not happened, so it is left out of the history instead of becoming a "maybe" (during
    a full-cluster outage hundreds of them would otherwise blow up the linearizability search)."""
    return (e.code() == grpc.StatusCode.UNAVAILABLE
            and (e.details() or "").startswith("failed to connect to all addresses"))


def _kv(kv) -> Optional[tuple]:
    return (kv.value.decode(), kv.mod_revision)


class Conn:
    """Stubs on one endpoint of a list, moving to the next endpoint on `failover()`."""

    def __init__(self, endpoints: list[str], start: int = 0):
        self.endpoints = endpoints
        self.idx = start % len(endpoints)
        self.epoch = 0  # bumped on every failover: a new connection
        self._open()

    def _open(self):
        self.channel = grpc.insecure_channel(self.endpoints[self.idx])
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)

    @property
    def endpoint(self) -> str:
        return self.endpoints[self.idx]

    def failover(self):
        self.channel.close()
        self.idx = (self.idx + 1) % len(self.endpoints)
        self.epoch += 1
        self._open()

    def close(self):
        self.channel.close()


class KVClient(threading.Thread):
    """Random Put / Get / serializable Get / prefix Range / Delete / CAS on a few keys."""

    def __init__(self, cid: int, endpoints: list[str], keys: list[str], prefix: str,
                 history: History, stop: threading.Event, seed: int):
        super().__init__(daemon=True, name=f"kv-client-{cid}")
        self.cid, self.keys, self.prefix, self.history, self.stop = cid, keys, prefix, history, stop
        self.conn = Conn(endpoints, cid)
        self.rnd = random.Random(seed)
        self.seq = 0
        self.last_seen: dict[str, Optional[str]] = {}

    def run(self):
        try:
            while not self.stop.is_set():
                self.one()
        finally:
            self.conn.close()

    def one(self):
        key = self.rnd.choice(self.keys)
        r = self.rnd.random()
        self.seq += 1
        value = f"c{self.cid}-{self.seq}"
        h = self.history
        kb = key.encode()
        if r < 0.25:
            op = Op(self.cid, PUT, key, {"value": value}, h.now())
            self._write(op, lambda: self.conn.kv.Put(
                rpc_pb2.PutRequest(key=kb, value=value.encode(), prev_kv=True), timeout=OP_TIMEOUT),
                lambda resp: {"rev": resp.header.revision,
                              "prev": _kv(resp.prev_kv) if resp.HasField("prev_kv") else None})
        elif r < 0.55:
            op = Op(self.cid, GET, key, {}, h.now())
            self._read(op, lambda: self.conn.kv.Range(rpc_pb2.RangeRequest(key=kb), timeout=OP_TIMEOUT),
                       lambda resp: {"kv": _kv(resp.kvs[0]) if resp.kvs else None, "rev": resp.header.revision})
        elif r < 0.65:
            op = Op(self.cid, SGET, key, {}, h.now())
            self._read(op, lambda: self.conn.kv.Range(rpc_pb2.RangeRequest(key=kb, serializable=True),
                                                      timeout=OP_TIMEOUT),
                       lambda resp: {"kv": _kv(resp.kvs[0]) if resp.kvs else None, "rev": resp.header.revision,
                                     "endpoint": self.conn.endpoint, "conn": self.conn.epoch})
        elif r < 0.70:
            p = self.prefix.encode()
            op = Op(self.cid, RANGE, self.prefix + "kv/", {}, h.now())
            self._read(op, lambda: self.conn.kv.Range(
                rpc_pb2.RangeRequest(key=p + b"kv/", range_end=prefix_end(p + b"kv/")), timeout=OP_TIMEOUT),
                lambda resp: {"kvs": {kv.key.decode(): _kv(kv) for kv in resp.kvs}, "rev": resp.header.revision})
        elif r < 0.78:
            op = Op(self.cid, DELETE, key, {}, h.now())
            self._write(op, lambda: self.conn.kv.DeleteRange(
                rpc_pb2.DeleteRangeRequest(key=kb, prev_kv=True), timeout=OP_TIMEOUT),
                lambda resp: {"deleted": resp.deleted, "rev": resp.header.revision,
                              "prev": _kv(resp.prev_kvs[0]) if resp.prev_kvs else None})
        else:
            expect = self.last_seen.get(key)
            if expect is None:
                cmp = rpc_pb2.Compare(key=kb, target=rpc_pb2.Compare.VERSION,
                                      result=rpc_pb2.Compare.EQUAL, version=0)
            else:
                cmp = rpc_pb2.Compare(key=kb, target=rpc_pb2.Compare.VALUE,
                                      result=rpc_pb2.Compare.EQUAL, value=expect.encode())
            req = rpc_pb2.TxnRequest(
                compare=[cmp],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=kb, value=value.encode(),
                                                                          prev_kv=True))],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=kb))])
            op = Op(self.cid, CAS, key, {"expect": expect, "value": value}, h.now())

            def parse(resp):
                if resp.succeeded:
                    pr = resp.responses[0].response_put
                    prev = _kv(pr.prev_kv) if pr.HasField("prev_kv") else None
                else:
                    rr = resp.responses[0].response_range
                    prev = _kv(rr.kvs[0]) if rr.kvs else None
                return {"succeeded": resp.succeeded, "rev": resp.header.revision, "prev": prev}
            self._write(op, lambda: self.conn.kv.Txn(req, timeout=OP_TIMEOUT), parse)

    def _remember(self, op: Op):
        out = op.output
        if op.kind in (GET, SGET):
            self.last_seen[op.key] = out["kv"][0] if out["kv"] else None
        elif op.kind == PUT:
            self.last_seen[op.key] = op.input["value"]
        elif op.kind == DELETE:
            self.last_seen[op.key] = None
        elif op.kind == CAS:
            self.last_seen[op.key] = op.input["value"] if out["succeeded"] else (
                out["prev"][0] if out["prev"] else None)

    def _write(self, op: Op, call, parse):
        try:
            resp = call()
        except grpc.RpcError as e:
            if not never_sent(e):
                self.history.add(op)  # maybe: ret = inf, output None
            self._backoff()
            return
        op.ret = self.history.now()
        op.output = parse(resp)
        self.history.add(op)
        self._remember(op)

    def _read(self, op: Op, call, parse):
        try:
            resp = call()
        except grpc.RpcError:
            self._backoff()
            return
        op.ret = self.history.now()
        op.output = parse(resp)
        self.history.add(op)
        self._remember(op)

    def _backoff(self):
        self.conn.failover()
        self.stop.wait(0.05)


@dataclass
class WatchEvent:
    """One event as a watcher received it."""

    rev: int
    key: str
    type: str  # "PUT" | "DELETE"
    value: Optional[str]
    prev: Optional[tuple]
    t: float


@dataclass
class WatchLog:
    """What one watcher saw: events in arrival order, (re)start revisions, errors."""

    wid: int
    start_rev: int
    events: list[WatchEvent] = field(default_factory=list)
    resumes: list[tuple[float, int]] = field(default_factory=list)  # (time, start_revision)
    errors: list[str] = field(default_factory=list)

    @property
    def last_rev(self) -> int:
        return self.events[-1].rev if self.events else self.start_rev - 1


class Watcher(threading.Thread):
    """Watches the round's prefix with prev_kv from `start_rev`; resumes after its last revision."""

    def __init__(self, wid: int, endpoints: list[str], prefix: str, start_rev: int,
                 history: History, stop: threading.Event):
        super().__init__(daemon=True, name=f"watcher-{wid}")
        self.endpoints, self.prefix, self.history, self.stop = endpoints, prefix.encode(), history, stop
        self.log = WatchLog(wid, start_rev)
        self.conn = Conn(endpoints, wid)
        self._call = None

    def run(self):
        while not self.stop.is_set():
            start = self.log.last_rev + 1
            self.log.resumes.append((self.history.now(), start))
            req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                key=self.prefix, range_end=prefix_end(self.prefix), start_revision=start, prev_kv=True))
            done = threading.Event()

            def requests():
                yield req
                done.wait()

            try:
                self._call = self.conn.watch.Watch(requests())
                for resp in self._call:
                    if resp.compact_revision:
                        self.log.errors.append(f"compacted at {resp.compact_revision} (asked {start})")
                        self.stop.set()
                        break
                    if resp.canceled:
                        self.log.errors.append(f"canceled: {resp.cancel_reason}")
                        break
                    now = self.history.now()
                    for ev in resp.events:
                        kv = ev.kv
                        self.log.events.append(WatchEvent(
                            kv.mod_revision, kv.key.decode(),
                            "DELETE" if ev.type == kv_pb2.Event.DELETE else "PUT",
                            kv.value.decode() if ev.type != kv_pb2.Event.DELETE else None,
                            _kv(ev.prev_kv) if ev.HasField("prev_kv") else None, now))
            except grpc.RpcError:
                pass
            finally:
                done.set()
            if not self.stop.is_set():
                self.conn.failover()
                self.stop.wait(0.05)
        self.conn.close()

    def cancel(self):
        self.stop.set()
        if self._call is not None:
            self._call.cancel()


@dataclass
class LeaseRecord:
    """The life of one lease and its single key, as the lease client observed it."""

    lease_id: int
    ttl: int
    key: str
    value: str
    granted_call: float
    put_ret: Optional[float] = None       # None: the put failed (maybe)
    keepalives: list[tuple[float, float, int]] = field(default_factory=list)  # (sent, received, ttl)
    revoke: Optional[tuple[float, float]] = None  # (call, ret) of an acknowledged revoke
    revoke_maybe: Optional[float] = None
    expired_seen: Optional[float] = None  # time a keepalive/TimeToLive reported it gone
    reads: list[tuple[float, float, Optional[str]]] = field(default_factory=list)  # (call, ret, value)


class LeaseClient(threading.Thread):
    """Grant → put leased key → keep alive while reading the key → revoke, or stop and let it expire."""

    def __init__(self, cid: int, endpoints: list[str], prefix: str, history: History,
                 stop: threading.Event, seed: int, ttl: int = 3):
        super().__init__(daemon=True, name=f"lease-client-{cid}")
        self.cid, self.prefix, self.history, self.stop, self.ttl = cid, prefix, history, stop, ttl
        self.conn = Conn(endpoints, cid)
        self.rnd = random.Random(seed)
        self.leases: list[LeaseRecord] = []

    def _retry(self, fn):
        try:
            return fn()
        except grpc.RpcError:
            self.conn.failover()
            self.stop.wait(0.05)
            return None

    def _read(self, rec: LeaseRecord):
        t0 = self.history.now()
        resp = self._retry(lambda: self.conn.kv.Range(rpc_pb2.RangeRequest(key=rec.key.encode()), timeout=OP_TIMEOUT))
        if resp is not None:
            rec.reads.append((t0, self.history.now(), resp.kvs[0].value.decode() if resp.kvs else None))

    def run(self):
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                self.one(n)
        finally:
            self.conn.close()

    def one(self, n: int):
        h = self.history
        t_grant = h.now()
        g = self._retry(lambda: self.conn.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=self.ttl), timeout=OP_TIMEOUT))
        if g is None or g.error:
            return
        key = f"{self.prefix}lease/{self.cid}/{n}"
        rec = LeaseRecord(g.ID, g.TTL, key, f"l{self.cid}-{n}", t_grant)
        self.leases.append(rec)
        p = self._retry(lambda: self.conn.kv.Put(rpc_pb2.PutRequest(key=key.encode(), value=rec.value.encode(),
                                                                    lease=g.ID), timeout=OP_TIMEOUT))
        if p is not None:
            rec.put_ret = h.now()
        keep_for = self.rnd.uniform(1.0, 2.5)
        t_end = h.now() + keep_for
        while h.now() < t_end and not self.stop.is_set():
            sent = h.now()
            ka = self._retry(lambda: next(iter(self.conn.lease.LeaseKeepAlive(
                iter([rpc_pb2.LeaseKeepAliveRequest(ID=g.ID)]), timeout=OP_TIMEOUT))))
            if ka is not None:
                if ka.TTL <= 0:
                    rec.expired_seen = h.now()
                    return
                rec.keepalives.append((sent, h.now(), ka.TTL))
            self._read(rec)
            self.stop.wait(0.3)
        if self.rnd.random() < 0.6 or self.stop.is_set():
            c = h.now()
            r = self._retry(lambda: self.conn.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=g.ID), timeout=OP_TIMEOUT))
            if r is not None:
                rec.revoke = (c, h.now())
            else:
                rec.revoke_maybe = c
        else:
            # Let it expire: poll TimeToLive until it is gone (bounded by the stop event).
            while not self.stop.is_set():
                t = self._retry(lambda: self.conn.lease.LeaseTimeToLive(
                    rpc_pb2.LeaseTimeToLiveRequest(ID=g.ID), timeout=OP_TIMEOUT))
                if t is not None and t.TTL == -1:
                    rec.expired_seen = h.now()
                    break
                self.stop.wait(0.3)
        self._read(rec)


class Compactor(threading.Thread):
    """Compacts every `period` s to the oldest revision every watcher has already passed."""

    def __init__(self, endpoints: list[str], watchers: list[Watcher], history: History,
                 stop: threading.Event, period: float = 1.5):
        super().__init__(daemon=True, name="compactor")
        self.conn = Conn(endpoints)
        self.watchers, self.history, self.stop, self.period = watchers, history, stop, period
        self.compacted = 0
        self.count = 0

    def run(self):
        while not self.stop.wait(self.period):
            target = min(w.log.last_rev for w in self.watchers)
            if target <= self.compacted + 1:
                continue
            try:
                self.conn.kv.Compact(rpc_pb2.CompactionRequest(revision=target), timeout=OP_TIMEOUT)
                self.compacted = target
                self.count += 1
                self.history.note(f"compacted to {target}")
            except grpc.RpcError as e:
                self.history.note(f"compact {target} failed: {e.code()}")
                self.conn.failover()
        self.conn.close()
