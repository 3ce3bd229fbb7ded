"""The benchmark suites: each turns `LoadOptions` into one measured `BenchResult`.

Unary suites (put, range, txn-put, hotkey, the unary half of mixed) run through h2load by
default (bench/h2load.py): one Python process cannot generate the load a Go server absorbs.
Streaming suites (watch, watch-latency, lease-keepalive) run grpc.aio clients in several
processes (bench/grpc_load.py). `--driver grpc` runs unary suites with the Python clients too,
for key spaces larger than h2load's fixed bodies allow.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field

from . import grpc_load, workers
from . import requests as rq
from .h2load import H2loadOutcome, grpc_frame, plan_runs, run_h2load
from .histogram import LatencyHistogram
from .metrics import cluster_handled_total, counter_sum, fetch_metrics, metrics_reachable
from cluster.launch import wait_until
from .result import BenchResult
from .roles import endpoints_with_role


@dataclass
class LoadOptions:
    """Every knob a suite may read. Suites ignore the knobs that do not apply to them.

    conns: connections; clients: concurrent requests (streams) over them; exactly one of
    total/duration bounds the run; rate: req/s over the whole load (None = as fast as possible).
    procs: load processes (h2load processes or grpc worker processes); default one per endpoint.
    """

    endpoints: list[str]
    conns: int = 1
    clients: int = 1
    total: int | None = 10000
    duration: float | None = None
    rate: float | None = None
    key_size: int = 8
    val_size: int = 8
    key_space: int = 1
    seq: bool = False
    driver: str = "h2load"
    procs: int | None = None
    # range
    serializable: bool = False
    prefix: bool = False
    limit: int = 0
    # txn-put
    txn_ops: int = 1
    # watch, watch-latency, mixed
    watchers: int = 10
    watch_keys: int = 1
    put_rate: float | None = 100.0
    grace: float = 10.0  # s to wait for events still due after the last put
    # unary suites: load only the first endpoint whose member is the "leader" or a "follower"
    # (None: every endpoint); see bench/roles.py
    role: str | None = None
    # hotkey
    cluster_metrics: list[str] = field(default_factory=list)
    # mixed
    read_ratio: float = 0.9
    workdir: str = field(default_factory=lambda: os.path.join(tempfile.gettempdir(), "kvbench"))

    @property
    def keys(self) -> rq.KeySpec:
        return rq.KeySpec(self.key_size, self.key_space, self.seq)

    @property
    def load_procs(self) -> int:
        return self.procs or len(self.endpoints)

    @property
    def target(self) -> str:
        return ",".join(self.endpoints)


def _unary_message(opts: LoadOptions, kind: str, index: int):
    """The request of `kind` for key number `index` of the key space."""
    key, value = opts.keys.key_for(index), rq.value_of(opts.val_size)
    if kind == "put":
        return rq.put_request(key, value)
    if kind == "range":
        return rq.range_request(key, opts.serializable, opts.prefix, opts.limit)
    if kind == "txn-put":
        # h2load bodies are fixed: the txn's other puts go to the keys after `key` (etcd rejects a
        # txn that puts one key twice, so the key space must hold txn_ops keys).
        if opts.txn_ops > opts.key_space:
            raise ValueError(f"--txn-ops {opts.txn_ops} needs --key-space >= {opts.txn_ops}")
        return rq.txn_put_request([opts.keys.key_for(index + j) for j in range(opts.txn_ops)], value)
    raise ValueError(f"unknown unary kind {kind!r}")


_PATHS = {"put": rq.PUT, "range": rq.RANGE, "txn-put": rq.TXN}


def _h2load_unary(opts: LoadOptions, kinds: list[tuple[str, int]]) -> tuple[H2loadOutcome, list[str]]:
    """Run h2load for each (kind, conns) at once; returns the outcome and caveats to show."""
    notes, runs = [], []
    procs_total = opts.load_procs
    for kind, conns in kinds:
        procs = max(1, round(procs_total * conns / opts.conns))
        nbodies = min(opts.key_space, max(procs, len(opts.endpoints)))
        bodies = [grpc_frame(_unary_message(opts, kind, i).SerializeToString())
                  for i in range(nbodies)]
        if nbodies < opts.key_space:
            notes.append(f"h2load sends one fixed body per process: {kind} used {nbodies} of "
                         f"{opts.key_space} keys (use --driver grpc for the whole key space)")
        clients = max(conns, round(opts.clients * conns / opts.conns))
        total = None if opts.total is None else max(1, round(opts.total * conns / opts.conns))
        rate = None if opts.rate is None else opts.rate * conns / opts.conns
        runs += plan_runs(opts.endpoints, _PATHS[kind], bodies, procs, conns, clients, total, opts.duration, rate)
    if opts.seq:
        notes.append("--seq has no effect with h2load (fixed bodies); use --driver grpc")
    out = run_h2load(runs, opts.workdir)
    if out.sampled_errors:
        notes.append("sampled gRPC errors: " + "; ".join(f"{n}× {d}" for d, n in out.sampled_errors.items()))
    return out, notes


def _from_h2load(suite: str, opts: LoadOptions, out: H2loadOutcome, notes: list[str]) -> BenchResult:
    return BenchResult(suite, opts.target, out.ok, out.errors, out.log.span_s, out.log.latency,
                       extra={"h2load_req_per_s": round(out.h2load_req_per_s, 1),
                              "h2load_processes": len(out.summaries),
                              "h2load_core_busy": round(out.generator_busy, 3),
                              "grpc_errors_from_data_bytes": out.grpc_errors,
                              "sampled_status": ", ".join(f"{k} {v}" for k, v in sorted(out.sampled_codes.items()))},
                       notes=notes)


def _from_merged(suite: str, opts: LoadOptions, merged: dict, unit: str = "req/s", **extra) -> BenchResult:
    notes = [f"errors: {merged['error_codes']}"] if merged["error_codes"] else []
    return BenchResult(suite, opts.target, merged["ok"], merged["errors"],
                       max(1e-6, merged["end"] - merged["start"]), merged["histogram"], unit=unit,
                       extra={"client_core_busy": merged["client_core_busy"], **extra}, notes=notes)


def run_unary(opts: LoadOptions, kind: str, suite: str | None = None) -> BenchResult:
    """put / range / txn-put, through h2load or the grpc driver."""
    suite = suite or kind
    if opts.role is not None:
        opts = LoadOptions(**{**opts.__dict__, "endpoints": endpoints_with_role(opts.endpoints, opts.role)[:1]})
    if opts.driver == "grpc":
        spec = workers.UnarySpec(opts.endpoints, kind, opts.conns, opts.clients, opts.total, opts.duration,
                                 opts.rate, opts.keys, opts.val_size, opts.serializable, opts.prefix,
                                 opts.limit, opts.txn_ops)
        return _from_merged(suite, opts, grpc_load.unary_load(spec, opts.load_procs))
    out, notes = _h2load_unary(opts, [(kind, opts.conns)])
    return _from_h2load(suite, opts, out, notes)


def run_hotkey(opts: LoadOptions) -> BenchResult:
    """A Range flood on one key through the target; `upstream_fraction` = Range calls the cluster
    members handled (their grpc_server_handled_total) / Range calls sent to the target."""
    one_key = LoadOptions(**{**opts.__dict__, "key_space": 1, "driver": "h2load"})
    for url in opts.cluster_metrics:  # a member may serve clients before its metrics listener is up
        wait_until(lambda url=url: metrics_reachable(url), 30, f"metrics at {url}", interval=0.2)
    before = cluster_handled_total(opts.cluster_metrics, "Range") if opts.cluster_metrics else None
    out, notes = _h2load_unary(one_key, [("range", opts.conns)])
    result = _from_h2load("hotkey", opts, out, notes)
    if before is None:
        result.notes.append("no --cluster-metrics: the fraction reaching the cluster is unknown")
    else:
        reached = _settled_handled_total(opts.cluster_metrics) - before
        sent = out.started + out.sampled
        result.extra.update(cluster_range_calls=int(reached), sent=sent,
                            upstream_fraction=round(reached / sent, 6) if sent else None)
    return result


def run_read_batching(opts: LoadOptions) -> BenchResult:
    """Linearizable Ranges from `clients` concurrent readers; `reads_per_round` = linearizable
    reads / ReadIndex rounds over all members during the run (etcd_server_linearizable_reads_total
    and etcd_server_read_indexes_total: ours only, etcd 3.4 has neither)."""
    def counts() -> tuple[float, float] | None:
        reads = rounds = 0.0
        for url in opts.cluster_metrics:
            text = fetch_metrics(url)
            r, n = counter_sum(text, "etcd_server_linearizable_reads"), counter_sum(text, "etcd_server_read_indexes")
            if r is None or n is None:
                return None
            reads, rounds = reads + r, rounds + n
        return (reads, rounds) if opts.cluster_metrics else None
    before = counts()
    result = run_unary(LoadOptions(**{**opts.__dict__, "serializable": False}), "range", "range-l-batching")
    after = counts()
    if before is None or after is None:
        result.notes.append("the cluster counts no ReadIndex rounds: reads per round unknown")
    else:
        reads, rounds = after[0] - before[0], after[1] - before[1]
        result.extra.update(reads_per_round=round(reads / rounds, 2) if rounds else None)
    return result


def _settled_handled_total(urls: list[str], timeout: float = 5.0) -> float:
    """The members' Range count once it stops moving: calls the target forwarded just before
    h2load stopped may still be in flight upstream."""
    last = [cluster_handled_total(urls, "Range")]

    def settled() -> bool:
        now = cluster_handled_total(urls, "Range")
        same, last[0] = now == last[0], now
        return same
    try:
        wait_until(settled, timeout, "the cluster's Range count to settle", interval=0.25)
    except TimeoutError:
        pass  # still moving (other traffic): take the latest figure
    return last[0]


def _watch_keys(opts: LoadOptions, n: int) -> list[bytes]:
    """Fresh keys per run, so that no earlier run's writes reach this run's watchers."""
    run = uuid.uuid4().hex[:8]
    return [f"kvbench-watch-{run}-{i}".encode() for i in range(n)]


def run_watch(opts: LoadOptions) -> BenchResult:
    """`watchers` watchers over `watch_keys` keys, one putter at `put_rate`: delivery latency
    (put sent -> event read, per event) and events delivered per second."""
    keys = _watch_keys(opts, opts.watch_keys)
    watch, put, _ = grpc_load.watch_load(opts.endpoints, opts.conns, opts.watchers, keys, opts.put_rate,
                                         opts.duration, opts.total, max(8, opts.val_size), opts.load_procs,
                                         grace=opts.grace)
    # Watcher w watches keys[w % M]; put i went to keys[i % M].
    m, puts = len(keys), put["issued"]
    expected = sum(puts // m + (1 if w % m < puts % m else 0) for w in range(opts.watchers))
    result = _from_merged("watch", opts, {**watch, "start": put["start"]}, unit="events/s",
                          puts=put["ok"], put_errors=put["errors"],
                          put_rate_achieved=round(put["ok"] / max(1e-6, put["end"] - put["start"]), 1),
                          delivered_fraction=round(watch["ok"] / expected, 6) if expected else None)
    return result


def run_watch_latency(opts: LoadOptions) -> BenchResult:
    """`watchers` watchers on one key, puts at `put_rate`: per put, the time until the LAST watcher
    has its event (fan-out completion), as etcd's tools/benchmark watch-latency measures."""
    keys = _watch_keys(opts, 1)
    watch, put, slowest = grpc_load.watch_load(opts.endpoints, opts.conns, opts.watchers, keys, opts.put_rate,
                                               opts.duration, opts.total, max(8, opts.val_size),
                                               opts.load_procs, per_revision=True, grace=opts.grace)
    # Only puts every watcher saw have a fan-out completion time.
    fanout = LatencyHistogram()
    for us, seen_by in slowest.values():
        if seen_by == opts.watchers:
            fanout.record(us)
    return _from_merged("watch-latency", opts,
                        {**put, "histogram": fanout, "ok": fanout.count, "errors": put["errors"],
                         "client_core_busy": watch["client_core_busy"]},
                        unit="puts/s", events=watch["ok"], watchers=opts.watchers,
                        puts_not_seen_by_all=put["ok"] - fanout.count)


def run_lease_keepalive(opts: LoadOptions) -> BenchResult:
    """`clients` leases kept alive over long-lived LeaseKeepAlive streams: keepalives/s, round trip."""
    spec = workers.KeepAliveSpec(opts.endpoints, opts.conns, opts.clients, opts.total, opts.duration, opts.rate)
    return _from_merged("lease-keepalive", opts, grpc_load.keepalive_load(spec, opts.load_procs),
                        unit="keepalives/s")


def run_mixed(opts: LoadOptions) -> BenchResult:
    """Reads and writes at once, plus `watchers` watchers on the written keys.

    The read/write mix is set by concurrency: read_ratio of the connections read (Range), the rest
    write (Put), each as fast as the target answers (or at their share of --rate); the achieved
    op counts are reported. Watchers count the events they receive.
    """
    read_conns = min(opts.conns - 1, max(1, round(opts.conns * opts.read_ratio)))
    if read_conns < 1:
        raise ValueError("mixed needs --conns >= 2 (readers and writers)")
    write_keys = [opts.keys.key_for(i) for i in range(min(opts.key_space, opts.load_procs))]
    watch_keys = [write_keys[w % len(write_keys)] for w in range(opts.watchers)]
    with grpc_load.WorkerPool() as pool:
        procs = max(1, min(opts.load_procs, opts.watchers))
        ids = [pool.spawn("watch", workers.WatchSpec(opts.endpoints, 1, watch_keys[i::procs], write_keys))
               for i in range(procs)] if opts.watchers else []
        pool.wait_ready(ids)
        pool.release()
        out, notes = _h2load_unary(opts, [("range", read_conns), ("put", opts.conns - read_conns)])
        time.sleep(min(opts.grace, 2.0))  # let the last events arrive: these watchers stop only when told
        pool.request_stop()
        events = sum(r["ok"] for r in pool.wait_done(ids, timeout=30)) if ids else 0
    result = _from_h2load("mixed", opts, out, notes)
    span = out.log.span_s
    result.extra.update(reads_per_s=round(out.ok_by_path.get(rq.RANGE, 0) / span, 1),
                        writes_per_s=round(out.ok_by_path.get(rq.PUT, 0) / span, 1),
                        watch_events_per_s=round(events / span, 1))
    return result
