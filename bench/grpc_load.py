"""Python-driven loads spread over several processes (streaming loads, and unary loads h2load
cannot express, such as a large key space or sequential keys).

One grpc.aio process tops out at a few thousand calls/s on this machine, so every load here is
split over `procs` worker processes (bench/workers.py) that set up, start together, and report
a result each; `merge` adds those results up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing as mp
import queue as queue_mod
import time
import traceback
from collections import Counter

from . import workers
from .histogram import LatencyHistogram

# Workers import grpc afresh: a forked copy of a parent's grpc state is not safe to use.
_CTX = mp.get_context("spawn")


def _entry(kind: str, spec, index: int, results, go_event, stop_event, puts_value) -> None:
    def ready() -> None:
        results.put(("ready", index, None))

    async def go() -> None:
        await asyncio.get_running_loop().run_in_executor(None, go_event.wait)

    def puts_published() -> int | None:
        return None if puts_value.value < 0 else puts_value.value

    try:
        if kind == "unary":
            coro = workers.run_unary(spec, ready, go)
        elif kind == "watch":
            coro = workers.run_watchers(spec, ready, go, puts_published, stop_event.is_set)
        elif kind == "put":
            coro = workers.run_putter(spec, ready, go)
        elif kind == "keepalive":
            coro = workers.run_keepalives(spec, ready, go)
        else:
            raise ValueError(f"unknown worker kind {kind!r}")
        results.put(("done", index, asyncio.run(coro)))
    except BaseException:  # report, so that the parent fails with the cause instead of hanging
        results.put(("failed", index, traceback.format_exc()))


class WorkerPool:
    """Worker processes that set up, start together on `release()`, and report one result each.

    Use as a context manager: leftover processes are terminated on exit.
    """

    def __init__(self):
        self._results = _CTX.Queue()
        self._go, self._stop = _CTX.Event(), _CTX.Event()
        self._puts = _CTX.Value("q", -1)
        self._procs: list = []
        self._ready: set[int] = set()
        self.results: dict[int, dict] = {}

    def spawn(self, kind: str, spec) -> int:
        index = len(self._procs)
        p = _CTX.Process(target=_entry, args=(kind, spec, index, self._results, self._go, self._stop, self._puts),
                         daemon=True)
        p.start()
        self._procs.append(p)
        return index

    def _pump(self, deadline: float, what: str) -> None:
        """Take one message from the workers; fail fast if a worker died without reporting."""
        while True:
            try:
                event, index, payload = self._results.get(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
                break
            except queue_mod.Empty:
                dead = [i for i, p in enumerate(self._procs) if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"load worker(s) {dead} died with exit codes "
                                       f"{[self._procs[i].exitcode for i in dead]} while we waited for them to {what}")
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"timed out waiting for load workers to {what}") from None
        if event == "failed":
            raise RuntimeError(f"load worker {index} failed:\n{payload}")
        if event == "ready":
            self._ready.add(index)
        else:
            self.results[index] = payload

    def wait_ready(self, indices, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not set(indices) <= self._ready:
            self._pump(deadline, "set up")

    def release(self) -> None:
        self._go.set()

    def publish_puts(self, n: int) -> None:
        self._puts.value = n

    def request_stop(self) -> None:
        self._stop.set()

    def wait_done(self, indices, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not set(indices) <= set(self.results):
            self._pump(deadline, "finish")
        return [self.results[i] for i in indices]

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def merge(results: list[dict]) -> dict:
    """Sum of ok/errors, merged histogram and error codes, the overall [start, end] span, and how
    busy the worker processes were (client_core_busy)."""
    hist, codes = LatencyHistogram(), Counter()
    for r in results:
        hist.merge(LatencyHistogram.from_dict(r["histogram"]))
        codes.update(r["error_codes"])
    start, end = min(r["start"] for r in results), max(r["end"] for r in results)
    cpu_s = sum(r["cpu_s"] for r in results)
    return {"ok": sum(r["ok"] for r in results), "errors": sum(r["errors"] for r in results),
            "error_codes": dict(codes), "histogram": hist, "start": start, "end": end,
            # Mean share of a core each worker used: near 1.0, the clients may be the bottleneck.
            "client_core_busy": round(cpu_s / (max(1e-6, end - start) * len(results)), 3)}


def _share(n: int | None, parts: int, i: int) -> int | None:
    return None if n is None else n // parts + (1 if i < n % parts else 0)


def unary_load(spec: workers.UnarySpec, procs: int) -> dict:
    """Run `spec` split over `procs` processes (conns, clients, total and rate divided)."""
    procs = max(1, min(procs, spec.clients))
    with WorkerPool() as pool:
        ids = [pool.spawn("unary", dataclasses.replace(
            spec, conns=max(1, _share(spec.conns, procs, i)), clients=max(1, _share(spec.clients, procs, i)),
            total=_share(spec.total, procs, i), rate=spec.rate / procs if spec.rate else None,
            worker_index=i, workers=procs, seed=spec.seed + i)) for i in range(procs)]
        pool.wait_ready(ids)
        pool.release()
        return merge(pool.wait_done(ids, timeout=_run_timeout(spec.duration)))


def _run_timeout(duration: float | None) -> float:
    return 600.0 if duration is None else duration + 120.0


def watch_load(endpoints: list[str], conns: int, watchers: int, keys: list[bytes], put_rate: float | None,
               duration: float | None, total: int | None, val_size: int, procs: int,
               per_revision: bool = False, grace: float = 10.0) -> tuple[dict, dict, dict[int, tuple[int, int]]]:
    """`watchers` watchers over `keys` (watcher w watches keys[w % len]) in `procs` processes, and one
    putter process writing keys round-robin at `put_rate`.

    Returns (watch result, put result, and if per_revision {revision: (slowest delivery µs, watchers
    that got it)}). Watchers
    stop once every expected event arrived, or `grace` seconds after the last put.
    """
    procs = max(1, min(procs, watchers))
    watch_keys = [keys[w % len(keys)] for w in range(watchers)]
    with WorkerPool() as pool:
        ids = []
        for i in range(procs):
            mine = watch_keys[i::procs]
            ids.append(pool.spawn("watch", workers.WatchSpec(
                endpoints, max(1, math.ceil(conns / procs)), mine, keys, per_revision)))
        # Enough concurrent putters that a put's latency does not cap the rate: at 20 puts/s each,
        # a put may take up to 50 ms.
        putters = 8 if not put_rate else max(1, min(64, math.ceil(put_rate / 20)))
        putter = pool.spawn("put", workers.PutterSpec(endpoints, keys, val_size, put_rate, duration, total,
                                                      putters))
        pool.wait_ready([*ids, putter])
        pool.release()
        put = pool.wait_done([putter], timeout=_run_timeout(duration))[0]
        pool.publish_puts(put["issued"])
        # Watchers finish on their own when everything arrived; stop stragglers after `grace`.
        deadline = time.monotonic() + grace
        while not set(ids) <= set(pool.results) and time.monotonic() < deadline:
            try:
                pool.wait_done(ids, timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            except TimeoutError:
                pass
        pool.request_stop()
        results = pool.wait_done(ids, timeout=30)
    slowest: dict[int, tuple[int, int]] = {}
    for r in results:
        for rev, (us, seen_by) in r["slowest"].items():
            prev_us, prev_seen = slowest.get(int(rev), (0, 0))
            slowest[int(rev)] = (max(prev_us, us), prev_seen + seen_by)
    put_merged = merge([put])
    put_merged["issued"] = put["issued"]
    return merge(results), put_merged, slowest


def keepalive_load(spec: workers.KeepAliveSpec, procs: int) -> dict:
    """Run `spec` split over `procs` processes."""
    procs = max(1, min(procs, spec.clients))
    with WorkerPool() as pool:
        ids = [pool.spawn("keepalive", dataclasses.replace(
            spec, conns=max(1, _share(spec.conns, procs, i)), clients=max(1, _share(spec.clients, procs, i)),
            total=_share(spec.total, procs, i), rate=spec.rate / procs if spec.rate else None))
            for i in range(procs)]
        pool.wait_ready(ids)
        pool.release()
        return merge(pool.wait_done(ids, timeout=_run_timeout(spec.duration)))
