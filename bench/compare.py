"""`kvbench compare`: the same suites on etcd 3.4.23 and on our stack, side by side.

It starts, on free loopback ports:
  * etcd 3.4.23, 3 members, and `etcd grpc-proxy` in front;
  * our `kvcluster`, 3 members with the same flags, and `kvproxy` in front (when they run; if not,
    their cells say "not available" and why);
  * the do-nothing grpc.aio server (bench/null_server.py): the Python ceiling.
The cluster suites run first, before either proxy starts (kvproxy's coherence watch would load our
members during them); the proxy suites then run with both proxies up.
Each suite runs `rounds` times per stack, alternating which stack goes first (ABBA...) so that
drift in the machine's load falls on both. Results of a stack's rounds are pooled (ops summed over
time summed, histograms merged). The table goes between the markers in docs/benchmarks.md and the
plots to docs/img/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from . import stack, suites
from .plots import write_plots
from cluster.launch import ClusterSpec, ProcessGroup
from .report import Cell, ComparisonRow, render_section, render_table, write_section
from .result import BenchResult


@dataclass
class Target:
    """One stack as the suites see it: where its members and its proxy listen."""

    name: str
    cluster: list[str] | None = None
    proxy: list[str] | None = None
    metrics: list[str] | None = None
    missing: str | None = None        # why this stack has no figures at all
    proxy_missing: str | None = None  # why it has no proxy figures
    spec: ClusterSpec | None = None   # the cluster's members (to put a proxy in front)

    def missing_for(self, tier: str) -> str | None:
        return self.missing or (self.proxy_missing if tier == "proxy" else None)


@dataclass
class Suite:
    """A suite of the comparison: which tier it loads, how, and whether the ceiling applies."""

    name: str  # for --suites: no spaces or commas
    tier: str  # "cluster" | "proxy"
    load: str  # shown in the table
    run: Callable[[suites.LoadOptions], BenchResult]
    options: dict
    ceiling: bool = False  # also run against the do-nothing server (unary suites only)
    extras: tuple[str, ...] = ()


def build_suites(quick: bool) -> list[Suite]:
    """Every suite, with its load. `quick` shortens runs and shrinks watcher counts."""
    d = 1.0 if quick else 4.0
    watchers = 100 if quick else 1000
    # Offered watch events/s stay within what the Python watcher processes read without queueing
    # (a few thousand messages/s each on this machine; client_core_busy shows how close they got).
    watch_rate = 200.0 if quick else 50.0        # 10 keys: 2,000 or 5,000 events/s
    latency_rate = 100.0 if quick else 20.0      # 1 key: 1,000 or 2,000 events/s
    # Streaming suites: worker processes take ~1 s each to start, so quick runs use fewer.
    stream = dict(procs=1, grace=3.0) if quick else dict(procs=2, grace=10.0)
    sat = dict(conns=100, clients=1000, duration=d, val_size=256, key_size=3)
    unary = lambda kind: (lambda o: suites.run_unary(o, kind))  # noqa: E731
    sat_text = f"h2load 100 conns × 10 streams, {d:g} s, 256 B values, one key"
    return [
        Suite("put", "cluster", sat_text, unary("put"), sat, ceiling=True),
        # One client's latency depends on the member it uses (a follower forwards the write and
        # answers once it has applied it), so both roles are measured, each against etcd's same role.
        Suite("put-1-client", "cluster", f"h2load 1 conn × 1 stream to the leader, {d:g} s", unary("put"),
              {**sat, "conns": 1, "clients": 1, "role": "leader"}),
        Suite("put-1-client-f", "cluster", f"h2load 1 conn × 1 stream to a follower, {d:g} s", unary("put"),
              {**sat, "conns": 1, "clients": 1, "role": "follower"}),
        Suite("range-l", "cluster", sat_text, unary("range"), {**sat, "serializable": False},
              ceiling=True),
        Suite("range-l-100", "cluster", f"h2load 10 conns × 10 streams (100 concurrent readers), {d:g} s, one key",
              suites.run_read_batching, {**sat, "conns": 10, "clients": 100}, extras=("reads_per_round",)),
        Suite("range-s", "cluster", sat_text, unary("range"), {**sat, "serializable": True}),
        Suite("txn-put", "cluster", sat_text.replace("one key", "1 put per txn"), unary("txn-put"), sat),
        Suite("hotkey-s", "proxy", sat_text, suites.run_hotkey, {**sat, "serializable": True},
              extras=("upstream_fraction", "cluster_range_calls")),
        Suite("hotkey-l", "proxy", sat_text, suites.run_hotkey, {**sat, "serializable": False},
              extras=("upstream_fraction", "cluster_range_calls")),
        Suite("watch", "cluster", f"{watchers} watchers over 10 keys, {watch_rate:g} puts/s, {d:g} s",
              suites.run_watch,
              dict(conns=10, watchers=watchers, watch_keys=10, put_rate=watch_rate, duration=d, total=None, **stream),
              extras=("delivered_fraction", "client_core_busy")),
        Suite("watch", "proxy", f"{watchers} watchers over 10 keys, {watch_rate:g} puts/s, {d:g} s",
              suites.run_watch,
              dict(conns=10, watchers=watchers, watch_keys=10, put_rate=watch_rate, duration=d, total=None, **stream),
              extras=("delivered_fraction", "client_core_busy")),
        Suite("watch-latency", "cluster", f"{watchers // 10} watchers on 1 key, {latency_rate:g} puts/s, {d:g} s",
              suites.run_watch_latency,
              dict(conns=10, watchers=watchers // 10, put_rate=latency_rate, duration=d, total=None, **stream),
              extras=("client_core_busy",)),
        Suite("lease-keepalive", "cluster", f"100 leases on 10 conns, {d:g} s", suites.run_lease_keepalive,
              dict(conns=10, clients=100, duration=d, total=None, **stream), extras=("client_core_busy",)),
        Suite("mixed", "cluster", f"h2load 90 conns Range (l) + 10 conns Put, ×10 streams, 10 watchers, {d:g} s",
              suites.run_mixed, {**sat, "read_ratio": 0.9, "watchers": 10, **stream}, extras=("reads_per_s", "writes_per_s",
                                                                                     "watch_events_per_s")),
    ]


def _options(suite: Suite, target: Target, workdir: str) -> suites.LoadOptions:
    endpoints = target.cluster if suite.tier == "cluster" else target.proxy
    opts = {"total": None, **suite.options}
    return suites.LoadOptions(endpoints=list(endpoints), cluster_metrics=list(target.metrics or []),
                              workdir=workdir, **opts)


def pool_results(results: list[BenchResult]) -> BenchResult:
    """One result from several rounds: ops and time summed, histograms merged, last round's extras."""
    first = results[0]
    merged = dataclasses.replace(first, latency=type(first.latency)(), notes=[], extra=dict(results[-1].extra))
    merged.ok = sum(r.ok for r in results)
    merged.errors = sum(r.errors for r in results)
    merged.duration_s = sum(r.duration_s for r in results)
    for r in results:
        merged.latency.merge(r.latency)
        merged.notes += [n for n in r.notes if n not in merged.notes]
    return merged


def _measure(suite: Suite, target: Target, workdir: str) -> BenchResult | str:
    """The suite's result on `target`, or why there is none (a failure here must not stop the run)."""
    try:
        return suite.run(_options(suite, target, workdir))
    except Exception as e:  # noqa: BLE001 — reported in the table instead
        return f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:200]


def _cell(outcomes: list[BenchResult | str], missing: str | None) -> Cell:
    if missing:
        return Cell(missing=missing)
    good = [o for o in outcomes if isinstance(o, BenchResult)]
    failed = [o for o in outcomes if isinstance(o, str)]
    if not good:
        return Cell(missing=failed[0] if failed else "no run")
    pooled = pool_results(good)
    pooled.notes += [f"{len(failed)} of {len(outcomes)} rounds {f}" for f in dict.fromkeys(failed)]
    return Cell(result=pooled)


def run_suites(suite_list: list[Suite], etcd: Target, ours: Target, ceiling: Target, rounds: int,
               workdir: str, log: Callable[[str], None]) -> list[ComparisonRow]:
    """Each suite `rounds` times per stack, alternating which stack goes first."""
    rows = []
    for suite in suite_list:
        outcomes: dict[str, list] = {"etcd": [], "ours": [], "ceiling": []}
        for r in range(rounds):
            order = [etcd, ours] if r % 2 == 0 else [ours, etcd]
            if suite.ceiling:
                order.append(ceiling)
            for target in order:
                if target.missing_for(suite.tier):
                    continue
                started = time.monotonic()
                outcome = _measure(suite, target, workdir)
                outcomes[target.name].append(outcome)
                figure = (f"{outcome.throughput:,.0f} {outcome.unit}" if isinstance(outcome, BenchResult)
                          else outcome)
                log(f"  {suite.name} ({suite.tier}) on {target.name}, round {r + 1}: {figure} "
                    f"[{time.monotonic() - started:.1f} s]")
        rows.append(ComparisonRow(
            suite.name, suite.tier, suite.load, _cell(outcomes["etcd"], etcd.missing_for(suite.tier)),
            _cell(outcomes["ours"], ours.missing_for(suite.tier)),
            _cell(outcomes["ceiling"], ceiling.missing) if suite.ceiling else None, list(suite.extras)))
    return rows


def _start_ours(procs: ProcessGroup, base: str) -> Target:
    reason = stack.our_stack_unavailable_reason()
    if reason:
        return Target("ours", missing=reason)
    try:
        spec = stack.start_kv_cluster(procs, stack.ClusterSpec.allocate(os.path.join(base, "kv"), 3))
    except Exception as e:  # noqa: BLE001
        return Target("ours", missing=f"kvcluster did not start: {str(e).splitlines()[0]}")
    return Target("ours", cluster=[m.endpoint for m in spec.members], metrics=spec.metrics_urls, spec=spec)


def _start_proxies(procs: ProcessGroup, etcd: Target, ours: Target) -> None:
    """Put etcd's grpc-proxy and our kvproxy in front of the running clusters."""
    etcd.proxy = [stack.start_etcd_proxy(procs, etcd.spec).listen_addr]
    if ours.missing:
        return
    try:
        ours.proxy = [stack.start_kvproxy(procs, ours.spec).listen_addr]
    except Exception as e:  # noqa: BLE001 — the other proxy suites' etcd figures still count
        ours.proxy_missing = f"kvproxy did not start: {str(e).splitlines()[0]}"


def _machine() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)")


def run_compare(args: argparse.Namespace) -> int:
    rounds = args.rounds or (1 if args.quick else 2)
    suite_list = build_suites(args.quick)
    if args.suites:
        wanted = {s.strip() for s in args.suites.split(",")}
        unknown = wanted - {s.name for s in suite_list}
        if unknown:
            raise SystemExit(f"unknown suite(s) {sorted(unknown)}; known: {sorted({s.name for s in suite_list})}")
        suite_list = [s for s in suite_list if s.name in wanted]
    started = time.monotonic()
    machine_before = _machine()
    log = lambda text: print(text, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="kvbench-compare-") as base:
        procs = ProcessGroup(os.path.join(base, "logs"))
        try:
            log("starting etcd 3.4.23 (3 members) ...")
            etcd_spec = stack.start_etcd_cluster(procs, stack.ClusterSpec.allocate(os.path.join(base, "etcd"), 3))
            etcd = Target("etcd", cluster=[m.endpoint for m in etcd_spec.members], metrics=etcd_spec.metrics_urls,
                          spec=etcd_spec)
            log("starting our kvcluster (3 members) ...")
            ours = _start_ours(procs, base)
            if ours.missing:
                log(f"  our stack is not available: {ours.missing}")
            log("starting the do-nothing grpc.aio server (Python ceiling) ...")
            null = stack.start_null_server(procs)
            ceiling = Target("ceiling", cluster=[null], proxy=[null])
            workdir = os.path.join(base, "h2load")
            # Cluster suites run before any proxy exists: kvproxy keeps a watch on the whole key
            # space (its cache's coherence), which would add its cost to every write of ours,
            # while an idle etcd grpc-proxy costs etcd nothing.
            by_tier = {tier: [s for s in suite_list if s.tier == tier] for tier in ("cluster", "proxy")}
            done = run_suites(by_tier["cluster"], etcd, ours, ceiling, rounds, workdir, log)
            if by_tier["proxy"]:
                log("starting etcd grpc-proxy and our kvproxy ...")
                _start_proxies(procs, etcd, ours)
                done += run_suites(by_tier["proxy"], etcd, ours, ceiling, rounds, workdir, log)
            order = {(s.name, s.tier): i for i, s in enumerate(suite_list)}
            rows = sorted(done, key=lambda row: order[(row.suite, row.tier)])
        finally:
            procs.close()
    elapsed = time.monotonic() - started
    plots, why_no_plots = write_plots(rows, args.img_dir)
    header = [
        f"Run: `kvbench compare{' --quick' if args.quick else ''}` on "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, {rounds} round(s) per stack, "
        f"{elapsed:.0f} s in all.",
        f"Machine before: {machine_before}. After: {_machine()}.",
    ]
    footer = ([f"![{os.path.basename(p)[:-4]}](img/{os.path.basename(p)})" for p in plots]
              or [f"No plots: {why_no_plots}."])
    write_section(args.doc, render_section(rows, header, footer))
    print(render_table(rows))
    print(f"\nwrote {args.doc}" + "".join(f", {p}" for p in plots) + (f"\n{why_no_plots}" if why_no_plots else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"suite": r.suite, "tier": r.tier, "load": r.load,
                        **{name: (c.result.to_dict() if c and c.result else (c.missing if c else None))
                           for name, c in (("etcd", r.etcd), ("ours", r.ours), ("ceiling", r.ceiling))}}
                       for r in rows], f, indent=2)
    return 0

