"""One robustness round: traffic, one fault with restart, then every checker.

Round layout: start watchers (from the current revision) and clients on a fresh key prefix; let
traffic run `warmup` s; inject the fault (kill, hold, restart, measure recovery); let traffic run
`after` s; stop; write a final key and wait until every watcher has seen it; compare HashKV on all
members at that revision; check linearizability, watches, leases, serializable-read sanity.
The history, seed and traces are kept in `out_dir` (always: cheap, and a failure needs them).
"""

from __future__ import annotations

import json
import os
import threading
import time

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from .faults import FaultCase, Stack, inject
from .history import CAS, PUT, RANGE, SGET, History
from .lease_checker import check_leases
from .linearizability import check_history, check_revision_order
from .report import RoundReport
from .traffic import Compactor, KVClient, LeaseClient, Watcher
from .watch_checker import check_watches, quiet_delete_keys, watch_observations
from cluster.launch import wait_until


def hashkv_check(stack: Stack, rev: int) -> list[str]:
    """HashKV at `rev` on every member must agree (waits until each has applied `rev`)."""
    got = {}
    for m in stack.spec.members:
        def ask(m=m):
            with grpc.insecure_channel(m.endpoint) as ch:
                try:
                    r = rpc_pb2_grpc.MaintenanceStub(ch).HashKV(rpc_pb2.HashKVRequest(revision=rev), timeout=2)
                except grpc.RpcError:
                    return False
            got[m.name] = (r.hash, r.compact_revision)
            return True
        try:
            wait_until(ask, 20.0, f"HashKV({rev}) on {m.name}", interval=0.1)
        except TimeoutError as e:
            return [str(e)]
    if len(set(got.values())) != 1:
        return [f"HashKV at revision {rev} differs: {got}"]
    return []


def serializable_sanity(ops) -> list[str]:
    """Serializable reads are not linearizable; check they return real writes, and never go back
    in header revision on one client's uninterrupted connection to one endpoint (what one etcd
    member gives, and what DESIGN.md promises for the proxy cache)."""
    written = {}
    for op in ops:
        if op.kind in (PUT, CAS):
            written.setdefault((op.key, op.input["value"]), set()).add(
                None if op.output is None else op.output["rev"])
    problems = []

    def real(key, kv, rev, what):
        if kv is None:
            return
        revs = written.get((key, kv[0]))
        if revs is None or (None not in revs and kv[1] not in revs):
            problems.append(f"{what} returned {key}={kv} that no write produced")
        if kv[1] > rev:
            problems.append(f"{what} returned {key}={kv} newer than its header revision {rev}")

    last = {}
    for op in sorted(ops, key=lambda o: o.call):
        if op.kind == SGET:
            real(op.key, op.output["kv"], op.output["rev"], f"serializable get c{op.client}@{op.call:.3f}")
            k = (op.client, op.output["endpoint"], op.output.get("conn"))
            if k in last and last[k] > op.output["rev"]:
                problems.append(f"serializable get c{op.client}@{op.call:.3f} on {k[1]} went back from "
                                f"revision {last[k]} to {op.output['rev']} on one connection")
            last[k] = op.output["rev"]
        elif op.kind == RANGE:
            for key, kv in op.output["kvs"].items():
                real(key, kv, op.output["rev"], f"prefix range c{op.client}@{op.call:.3f}")
    return problems


def run_round(stack: Stack, round_no: int, case: FaultCase | None, seed: int, out_dir: str,
              n_clients: int = 8, n_keys: int = 4, warmup: float = 1.5, after: float = 1.5) -> RoundReport:
    os.makedirs(out_dir, exist_ok=True)
    history = History()
    prefix = f"/rb/{round_no}/"
    eps = stack.endpoints
    start_rev = stack.try_put(f"/rb/{round_no}-start".encode(), timeout=2.0)
    assert start_rev is not None, "cluster does not take writes before the round"
    stop = threading.Event()
    wstop = threading.Event()
    watchers = [Watcher(i, eps, prefix, start_rev + 1, history, wstop) for i in range(2)]
    keys = [f"{prefix}kv/{i}" for i in range(n_keys)]
    clients = [KVClient(i, eps, keys, prefix, history, stop, seed * 1000 + i) for i in range(n_clients)]
    lease_clients = [LeaseClient(100 + i, eps, prefix, history, stop, seed * 1000 + 100 + i) for i in range(2)]
    compactor = Compactor(eps, watchers, history, stop)
    threads = [*watchers, *clients, *lease_clients, compactor]
    for t in threads:
        t.start()
    rep = RoundReport(round_no, case.name if case else "none", [], seed)
    problems: dict[str, list[str]] = {}
    stop.wait(warmup)
    if case is not None:
        fr = inject(stack, case, stop, history)
        rep.victims, rep.recovery = fr.victims, fr.recovery
        if fr.problems:
            problems["recovery"] = fr.problems
    stop.wait(after)
    stop.set()
    for t in [*clients, *lease_clients, compactor]:
        t.join(30)
    end_rev = None
    deadline = time.monotonic() + 20
    while end_rev is None and time.monotonic() < deadline:
        end_rev = stack.try_put(f"{prefix}end".encode(), timeout=2.0)
    if end_rev is None:
        problems.setdefault("recovery", []).append("no write succeeded after the round")
    else:
        try:
            wait_until(lambda: all(w.log.last_rev >= end_rev or w.log.errors for w in watchers), 20.0,
                       f"watchers reaching revision {end_rev}")
        except TimeoutError as e:
            problems.setdefault("watch", []).append(str(e))
        hk = hashkv_check(stack, end_rev)
        if hk:
            problems["hashkv"] = hk
    for w in watchers:
        w.cancel()
    for w in watchers:
        w.join(10)

    t0 = time.monotonic()
    ops = history.ops
    logs = [w.log for w in watchers]
    leases = [r for lc in lease_clients for r in lc.leases]
    # The watch evidence is used only when the watch checker finds the watches complete.
    watch_problems = check_watches(logs, ops, leases, {(f"{prefix}end", "probe"): end_rev} if end_rev else {})
    complete = not watch_problems and end_rev is not None
    lin = check_history(ops, extra_observations=list(watch_observations(logs)) if complete else (),
                        quiet_delete_keys=quiet_delete_keys(logs, ops, keys) if complete else ())
    if not lin.ok:
        traces = []
        for p in lin.violations:
            path = os.path.join(out_dir, f"round-{round_no}-violation-{p.key.replace('/', '_')}.txt")
            with open(path, "w") as f:
                f.write(p.trace())
            traces.append(f"key {p.key}: {'timed out' if p.timed_out else 'not linearizable'}; trace in {path}")
        problems["linearizability"] = traces
    for name, found in (("watch", watch_problems), ("lease", check_leases(leases)),
                        ("serializable", serializable_sanity(ops)),
                        ("revision-order", check_revision_order(ops))):
        if found:
            problems.setdefault(name, []).extend(found)
    rep.check_seconds = time.monotonic() - t0
    rep.ops_total = len(ops)
    acks = sorted(o.ret for o in ops if o.kind in (PUT, CAS, "delete") and not o.maybe)
    rep.outage = max((b - a for a, b in zip(acks, acks[1:])), default=0.0)
    rep.ops_checked = lin.ops_checked
    rep.maybes_dropped = lin.dropped_maybes
    rep.watch_events = sum(len(l.events) for l in logs)
    rep.leases = len(leases)
    rep.compactions = compactor.count
    rep.violations = problems
    history.dump(os.path.join(out_dir, f"round-{round_no}-history.jsonl"))
    with open(os.path.join(out_dir, f"round-{round_no}-extra.json"), "w") as f:
        json.dump({"seed": seed, "fault": rep.fault, "victims": rep.victims, "problems": problems,
                   "watch": [[(e.rev, e.key, e.type, e.value, e.prev) for e in l.events] for l in logs],
                   "leases": [vars(r) for r in leases]}, f, default=str)
    return rep
