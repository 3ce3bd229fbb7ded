"""`kvbench`: load any etcd v3 endpoints, or compare our stack with etcd 3.4.23 side by side.

    kvbench put --endpoints 127.0.0.1:2379 --conns 100 --clients 1000 --total 100000 --val-size 256
    kvbench range --consistency s --endpoints 127.0.0.1:23790 --duration 10
    kvbench hotkey --endpoints PROXY --cluster-metrics http://127.0.0.1:2381,... --conns 50 --clients 500
    kvbench watch --watchers 1000 --watch-keys 10 --put-rate 200 --duration 10
    kvbench compare [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys

from . import suites
from .result import format_text

# The checkout kvbench runs from: compare writes its docs/ by default.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("load")
    g.add_argument("--endpoints", default="127.0.0.1:2379", help="comma-separated host:port list")
    g.add_argument("--conns", type=int, default=1, help="gRPC (HTTP/2) connections")
    g.add_argument("--clients", type=int, default=1, help="concurrent requests/streams over the connections")
    bound = g.add_mutually_exclusive_group()
    bound.add_argument("--total", type=int, help="requests to send (default 10000)")
    bound.add_argument("--duration", type=float, help="seconds to run instead of --total")
    g.add_argument("--rate", type=float, help="requests/s over the whole load (default: as fast as possible)")
    g.add_argument("--key-size", type=int, default=8)
    g.add_argument("--val-size", type=int, default=8)
    g.add_argument("--key-space", type=int, default=1, help="distinct keys")
    g.add_argument("--seq", action="store_true", help="sequential keys instead of random (grpc driver)")
    g.add_argument("--driver", choices=["h2load", "grpc"], default="h2load",
                   help="unary loads: h2load (fast, fixed bodies) or grpc.aio processes (any key pattern)")
    g.add_argument("--procs", type=int, help="load processes (default: one per endpoint)")
    g.add_argument("--workdir", help="where h2load's per-request logs go (default: $TMPDIR/kvbench)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvbench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    _common(sub.add_parser("put", help="Put requests"))
    r = sub.add_parser("range", help="Range requests")
    _common(r)
    r.add_argument("--consistency", choices=["l", "s"], default="l", help="linearizable or serializable")
    r.add_argument("--prefix", action="store_true", help="range over the key as a prefix")
    r.add_argument("--limit", type=int, default=0)
    t = sub.add_parser("txn-put", help="Txn requests whose success branch puts --txn-ops keys")
    _common(t)
    t.add_argument("--txn-ops", type=int, default=1)
    for name, text in (("watch", "N watchers over M keys, puts at a rate: delivery latency, events/s"),
                       ("watch-latency", "N watchers on one key: per put, time until the last watcher has it")):
        w = sub.add_parser(name, help=text)
        _common(w)
        w.add_argument("--watchers", type=int, default=10)
        w.add_argument("--watch-keys", type=int, default=1, help="keys watched (watch only)")
        w.add_argument("--put-rate", type=float, default=100.0, help="puts/s (--total/--duration bound the puts)")
    _common(sub.add_parser("lease-keepalive", help="--clients leases kept alive on long-lived streams"))
    h = sub.add_parser("hotkey", help="Range flood on one key; fraction reaching the cluster")
    _common(h)
    h.add_argument("--consistency", choices=["l", "s"], default="s")
    h.add_argument("--cluster-metrics", default="", help="comma-separated member metrics URLs")
    m = sub.add_parser("mixed", help="reads, writes and watchers at once")
    _common(m)
    m.add_argument("--read-ratio", type=float, default=0.9, help="share of connections that read")
    m.add_argument("--watchers", type=int, default=10)

    c = sub.add_parser("compare", help="etcd 3.4.23 vs our stack, side by side; writes docs/benchmarks.md")
    c.add_argument("--quick", action="store_true", help="short runs (<= 2 minutes in all)")
    c.add_argument("--rounds", type=int, help="alternating rounds per suite (default 2, quick 1)")
    c.add_argument("--doc", default=os.path.join(_CHECKOUT, "docs", "benchmarks.md"),
                   help="Markdown file whose kvbench section is replaced (default: this checkout's)")
    c.add_argument("--img-dir", default=os.path.join(_CHECKOUT, "docs", "img"),
                   help="where the PNG plots go (needs matplotlib)")
    c.add_argument("--suites", help="comma-separated subset of: put, put-1-client, put-1-client-f, range-l, "
                                    "range-l-100, range-s, txn-put, hotkey-s, hotkey-l, watch, watch-latency, "
                                    "lease-keepalive, mixed")
    c.add_argument("--json", help="also write every result to this JSON file")
    return parser


def options_from(args: argparse.Namespace) -> suites.LoadOptions:
    total = args.total if args.total is not None else (None if args.duration else 10000)
    extra = {}
    if hasattr(args, "consistency"):
        extra["serializable"] = args.consistency == "s"
    for name in ("prefix", "limit", "txn_ops", "watchers", "watch_keys", "put_rate", "read_ratio"):
        if hasattr(args, name):
            extra[name] = getattr(args, name)
    if getattr(args, "cluster_metrics", ""):
        extra["cluster_metrics"] = [u for u in args.cluster_metrics.split(",") if u]
    if args.workdir:
        extra["workdir"] = args.workdir
    return suites.LoadOptions(
        endpoints=[e for e in args.endpoints.split(",") if e], conns=args.conns, clients=max(args.clients, args.conns),
        total=total, duration=args.duration, rate=args.rate, key_size=args.key_size, val_size=args.val_size,
        key_space=args.key_space, seq=args.seq, driver=args.driver, procs=args.procs, **extra)


def run_suite(command: str, opts: suites.LoadOptions):
    if command in ("put", "range", "txn-put"):
        return suites.run_unary(opts, command)
    return {"watch": suites.run_watch, "watch-latency": suites.run_watch_latency,
            "lease-keepalive": suites.run_lease_keepalive, "hotkey": suites.run_hotkey,
            "mixed": suites.run_mixed}[command](opts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "compare":
        from .compare import run_compare
        return run_compare(args)
    result = run_suite(args.command, options_from(args))
    print(result.to_json() if args.json else format_text(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
