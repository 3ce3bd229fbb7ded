"""What runs inside one load-generating process (grpc.aio clients), for the Python-driven loads.

Every worker follows the same protocol with the parent (bench/grpc_load.py):
  1. set up (open channels, create watches, grant leases), then report ("ready", index);
  2. wait for the shared `go` event, so that every process starts its load at the same moment;
  3. run, then report ("done", index, result) where result is a plain dict:
     {"ok", "errors", "error_codes", "start", "end" (time.time() s), "histogram" (dict),
      and kind-specific fields}.

Timestamps that cross processes (a put's send time carried in its value, read by a watcher) use
time.time_ns(): every process on one machine reads the same clock.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from . import requests as rq
from .histogram import LatencyHistogram


@dataclass
class UnarySpec:
    """`clients` coroutines over `conns` channels sending one kind of unary request.

    kind: "put" | "range" | "txn-put". Keys follow `keys`; this worker's sequential keys are
    `worker_index + workers * i`, so concurrent workers cover the key space without overlap.
    `rate` (req/s for this worker, None = unbounded) schedules sends; a send's latency is then
    measured from its scheduled time, so a stalled server cannot hide queueing delay.
    """

    endpoints: list[str]
    kind: str
    conns: int
    clients: int
    total: int | None
    duration: float | None
    rate: float | None
    keys: rq.KeySpec
    val_size: int = 8
    serializable: bool = False
    prefix: bool = False
    limit: int = 0
    txn_ops: int = 1
    worker_index: int = 0
    workers: int = 1
    seed: int = 0


@dataclass
class WatchSpec:
    """`len(watch_keys)` watchers, one gRPC stream each, spread over `conns` channels.

    A watcher expects one event per put on its key. The worker stops when every watcher got
    `expected(key)` events (known once the parent publishes the number of puts), or when `stop`
    is set. Put values start with the put's send time (8-byte big-endian ns since epoch).
    """

    endpoints: list[str]
    conns: int
    watch_keys: list[bytes]
    put_keys: list[bytes]  # the putter writes put_keys[i % len(put_keys)] for put i
    per_revision: bool = False  # also return {revision: (slowest delivery µs, watchers that got it)}


@dataclass
class PutterSpec:
    """Puts at `rate` per second (None = as fast as one client goes) for `duration` s or `total` puts."""

    endpoints: list[str]
    keys: list[bytes]
    val_size: int
    rate: float | None
    duration: float | None
    total: int | None
    clients: int = 1


@dataclass
class KeepAliveSpec:
    """`clients` leases, each kept alive on its own LeaseKeepAlive stream as fast as it answers
    (or at `rate` per second for the worker), for `duration` s or `total` keepalives."""

    endpoints: list[str]
    conns: int
    clients: int
    total: int | None
    duration: float | None
    rate: float | None
    ttl: int = 60


@dataclass
class _Tally:
    """A worker's counts over its measured phase: `begin()` at the start, `finish()` at the end."""

    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    start: float = 0.0
    end: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time over the measured phase

    def begin(self) -> None:
        self.start, self.cpu_s = time.time(), -time.process_time()

    def finish(self) -> None:
        self.end = time.time()
        self.cpu_s += time.process_time()

    def result(self, **extra) -> dict:
        return {"ok": self.ok, "errors": sum(self.errors.values()), "error_codes": dict(self.errors),
                "start": self.start, "end": self.end, "cpu_s": self.cpu_s, "histogram": self.latency.to_dict(),
                **extra}


def _channels(endpoints: list[str], n: int) -> list[grpc.aio.Channel]:
    return [grpc.aio.insecure_channel(endpoints[i % len(endpoints)]) for i in range(max(1, n))]


class _Budget:
    """Shared by a worker's clients: hands out request numbers until `total` or the deadline."""

    def __init__(self, total: int | None, duration: float | None):
        self.total, self.issued = total, 0
        self.deadline = None if duration is None else time.monotonic() + duration

    def take(self) -> int | None:
        if self.total is not None and self.issued >= self.total:
            return None
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return None
        self.issued += 1
        return self.issued - 1


async def _paced(rate: float | None, clients: int, client: int, t0: float, k: int) -> float:
    """Sleep until client `client`'s k-th slot under `rate` spread over `clients`; returns the
    slot's monotonic time (now, when unpaced)."""
    if not rate:
        return time.monotonic()
    interval = clients / rate
    slot = t0 + (k + client / clients) * interval
    delay = slot - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    return slot


def _unary_payload(spec: UnarySpec, n: int, rng: random.Random) -> bytes:
    if spec.keys.seq:
        key = spec.keys.key_for(spec.worker_index + spec.workers * n)
    else:
        key = spec.keys.key_for(rng.randrange(spec.keys.key_space))
    value = rq.value_of(spec.val_size)
    if spec.kind == "put":
        msg = rq.put_request(key, value)
    elif spec.kind == "range":
        msg = rq.range_request(key, spec.serializable, spec.prefix, spec.limit)
    elif spec.kind == "txn-put":
        # Distinct keys (etcd rejects a txn that puts one key twice): the ones after `key`.
        first = int(key)
        msg = rq.txn_put_request([spec.keys.key_for(first + j) for j in range(spec.txn_ops)], value)
    else:
        raise ValueError(f"unknown unary kind {spec.kind!r}")
    return msg.SerializeToString()


_PATHS = {"put": rq.PUT, "range": rq.RANGE, "txn-put": rq.TXN}


async def run_unary(spec: UnarySpec, ready, go) -> dict:
    channels = _channels(spec.endpoints, spec.conns)
    calls = [ch.unary_unary(_PATHS[spec.kind]) for ch in channels]  # raw bytes in and out
    rng = random.Random(spec.seed)
    tally = _Tally()
    ready()
    await go()
    budget = _Budget(spec.total, spec.duration)
    t0 = time.monotonic()
    tally.begin()

    async def client(c: int) -> None:
        call, k = calls[c % len(calls)], 0
        while (n := budget.take()) is not None:
            sent = await _paced(spec.rate, spec.clients, c, t0, k)
            k += 1
            try:
                await call(_unary_payload(spec, n, rng), timeout=30)
                tally.ok += 1
                tally.latency.record((time.monotonic() - sent) * 1e6)
            except grpc.RpcError as e:
                tally.errors[e.code().name] += 1

    await asyncio.gather(*(client(c) for c in range(spec.clients)))
    tally.finish()
    for ch in channels:
        await ch.close()
    return tally.result()


def _stamp(val_size: int) -> bytes:
    ts = struct.pack(">Q", time.time_ns())
    return ts + b"v" * max(0, val_size - len(ts))


async def run_watchers(spec: WatchSpec, ready, go, puts_published, stop_requested) -> dict:
    """`puts_published()` -> number of puts once the putter finished, else None."""
    channels = _channels(spec.endpoints, spec.conns)
    tally = _Tally()
    slowest: dict[int, tuple[int, int]] = {}  # revision -> (slowest µs, watchers that got it)
    put_keys = spec.put_keys

    def expected(key: bytes, puts: int) -> int:
        """Puts that went to `key` when put i went to put_keys[i % len(put_keys)]."""
        idx = [i for i, k in enumerate(put_keys) if k == key]
        return sum(puts // len(put_keys) + (1 if i < puts % len(put_keys) else 0) for i in idx)

    streams = []
    for i, key in enumerate(spec.watch_keys):
        call = rpc_pb2_grpc.WatchStub(channels[i % len(channels)]).Watch()
        await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key)))
        created = await call.read()
        if not created.created:
            raise RuntimeError(f"watch on {key!r} not created: {created}")
        streams.append((key, call))
    ready()
    await go()
    tally.begin()
    received = [0] * len(streams)

    async def watcher(i: int, call) -> None:
        """Read events until cancelled by us; a stream the server ends or cancels is an error."""
        while True:
            try:
                resp = await call.read()
            except grpc.RpcError as e:
                tally.errors[f"watch stream {e.code().name}"] += 1
                return
            if resp is grpc.aio.EOF:
                tally.errors["watch stream ended by the server"] += 1
                return
            if resp.canceled:
                tally.errors[f"watch canceled: {resp.cancel_reason or 'no reason given'}"] += 1
                return
            now = time.time_ns()
            for ev in resp.events:
                us = (now - struct.unpack(">Q", ev.kv.value[:8])[0]) // 1000
                tally.latency.record(us)
                tally.ok += 1
                received[i] += 1
                if spec.per_revision:
                    prev_us, seen_by = slowest.get(ev.kv.mod_revision, (0, 0))
                    slowest[ev.kv.mod_revision] = (max(prev_us, us), seen_by + 1)

    tasks = [asyncio.create_task(watcher(i, call)) for i, (_, call) in enumerate(streams)]
    targets = None
    while not stop_requested():
        if targets is None and (puts := puts_published()) is not None:
            per_key = {k: expected(k, puts) for k in set(spec.watch_keys)}
            targets = [per_key[k] for k, _ in streams]
        if targets is not None and all(r >= t for r, t in zip(received, targets)):
            break
        await asyncio.sleep(0.05)
    tally.finish()
    for t in tasks:
        t.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception) and not isinstance(outcome, asyncio.CancelledError):
            tally.errors[f"watcher failed: {type(outcome).__name__}"] += 1
    for _, call in streams:
        call.cancel()
    for ch in channels:
        await ch.close()
    return tally.result(slowest={str(r): v for r, v in slowest.items()})


async def run_putter(spec: PutterSpec, ready, go) -> dict:
    channels = _channels(spec.endpoints, 1)
    put = channels[0].unary_unary(rq.PUT)
    tally = _Tally()
    ready()
    await go()
    budget = _Budget(spec.total, spec.duration)
    t0 = time.monotonic()
    tally.begin()

    async def client(c: int) -> None:
        k = 0
        while (n := budget.take()) is not None:
            sent = await _paced(spec.rate, spec.clients, c, t0, k)
            k += 1
            req = rq.put_request(spec.keys[n % len(spec.keys)], _stamp(spec.val_size)).SerializeToString()
            try:
                await put(req, timeout=30)
                tally.ok += 1
                tally.latency.record((time.monotonic() - sent) * 1e6)
            except grpc.RpcError as e:
                tally.errors[e.code().name] += 1

    await asyncio.gather(*(client(c) for c in range(spec.clients)))
    tally.finish()
    await channels[0].close()
    # Puts are numbered in issue order, so key i % len(keys) got exactly its share of `issued`.
    return tally.result(issued=budget.issued)


async def run_keepalives(spec: KeepAliveSpec, ready, go) -> dict:
    channels = _channels(spec.endpoints, spec.conns)
    tally = _Tally()
    streams = []
    for c in range(spec.clients):
        stub = rpc_pb2_grpc.LeaseStub(channels[c % len(channels)])
        lease = await stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=spec.ttl), timeout=30)
        streams.append((lease.ID, stub.LeaseKeepAlive()))
    ready()
    await go()
    budget = _Budget(spec.total, spec.duration)
    t0 = time.monotonic()
    tally.begin()

    async def client(c: int) -> None:
        lease_id, call = streams[c]
        k = 0
        while budget.take() is not None:
            sent = await _paced(spec.rate, spec.clients, c, t0, k)
            k += 1
            try:
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                resp = await call.read()
            except grpc.RpcError as e:
                tally.errors[e.code().name] += 1
                return
            if resp is grpc.aio.EOF or resp.TTL <= 0:
                tally.errors["EOF" if resp is grpc.aio.EOF else "LEASE_EXPIRED"] += 1
                return
            tally.ok += 1
            tally.latency.record((time.monotonic() - sent) * 1e6)

    await asyncio.gather(*(client(c) for c in range(spec.clients)))
    tally.finish()
    for _, call in streams:
        call.cancel()
    revoke = rpc_pb2_grpc.LeaseStub(channels[0])
    for lease_id, _ in streams:
        try:
            await revoke.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=10)
        except grpc.RpcError:
            pass  # best effort: the lease expires on its own after ttl
    for ch in channels:
        await ch.close()
    return tally.result()
