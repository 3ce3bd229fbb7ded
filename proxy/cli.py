"""`kvproxy start`: the proxy's command line, with `etcd grpc-proxy start`'s flags plus our own.

    kvproxy start --endpoints=127.0.0.1:2379,127.0.0.1:22379 --listen-addr=127.0.0.1:23790 \\
                  --metrics-addr=http://127.0.0.1:23791 [--namespace=p/] [--workers=2] ...

etcd-compatible flags: --endpoints, --listen-addr, --metrics-addr, --namespace, --cert, --key,
--cacert (TLS to the cluster), --cert-file, --key-file, --trusted-ca-file, --auto-tls (TLS to
clients), --data-dir, --max-send-bytes, --max-recv-bytes, --max-concurrent-streams, --debug,
--grpc-keepalive-{min-time,interval,timeout} (etcd 3.5's); the
rest of etcd 3.4's are accepted without effect or refused unless left at their default
(cluster/etcd_flags.py, PROXY_NO_EFFECT and PROXY_UNSUPPORTED; docs/proxy.md). Ours: --workers, --cache-max-entries, --cache-max-bytes,
--max-requests-per-client-per-second, --max-requests-per-key-per-second,
--linearizable-read-interval-ms, --cache-user,
--log-level.
Flags accept both `--flag value` and `--flag=value`, like etcd's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import uvloop

from cluster import cpu_policy, etcd_flags
from cluster.tls import TLSInfo, self_signed

from .server import ProxyConfig, ProxyServer, listen_hostport
from .upstream import DEFAULT_MAX_RECV_BYTES, DEFAULT_MAX_SEND_BYTES


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvproxy", description="A caching etcd v3 gRPC proxy.")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start the proxy")
    a = start.add_argument
    a("--endpoints", type=_csv, default=["127.0.0.1:2379"], help="comma separated etcd cluster endpoints")
    a("--listen-addr", default="127.0.0.1:23790", help="listen address")
    a("--metrics-addr", type=_csv, default=[],
      help="listen for /metrics, /health and /proxy/health on these http URLs")
    a("--namespace", default="", help="string to prefix to all keys for namespacing requests")
    a("--cert", default="", help="TLS certificate to identify to the etcd servers")
    a("--key", default="", help="TLS key to identify to the etcd servers")
    a("--cacert", default="", help="CA bundle verifying the etcd servers' certificates")
    a("--cert-file", default="", help="TLS certificate the proxy presents to its clients")
    a("--key-file", default="", help="TLS key the proxy presents to its clients")
    a("--trusted-ca-file", default="", help="CA bundle verifying client certificates (enables client auth)")
    a("--auto-tls", action="store_true",
      help="serve clients over TLS with a generated self-signed certificate (<data-dir>/fixtures/proxy)")
    a("--data-dir", default="default.proxy", help="data directory (holds the --auto-tls certificate)")
    a("--max-send-bytes", type=int, default=DEFAULT_MAX_SEND_BYTES,
      help="largest message sent to the cluster (default 1.5 MiB, as etcd's)")
    a("--max-recv-bytes", type=int, default=DEFAULT_MAX_RECV_BYTES,
      help="largest message received, from the cluster or from a client (default math.MaxInt32)")
    a("--workers", type=int, default=1,
      help="worker processes sharing --listen-addr through SO_REUSEPORT (metrics aggregated)")
    a("--cache-max-entries", type=int, default=100_000, help="cached Range responses per worker")
    a("--cache-max-bytes", type=int, default=256 * 1024 * 1024, help="bytes of cached responses per worker")
    a("--max-requests-per-client-per-second", type=float, default=0.0,
      help="admission limit per client address on KV calls; 0 = off (answers RESOURCE_EXHAUSTED)")
    a("--max-requests-per-key-per-second", type=float, default=0.0,
      help="admission limit per key on KV calls naming a key; 0 = off (answers RESOURCE_EXHAUSTED)")
    a("--linearizable-read-interval-ms", type=float, default=25.0,
      help="identical linearizable Ranges of a hot key go upstream at most once per this interval "
           "per worker (readers arriving meanwhile share the next call); 0 = as soon as the previous "
           "call returns")
    a("--cache-user", default="",
      help="USER:PASSWORD for the cache's keyspace watch when the cluster has auth enabled (the user "
           "needs read permission on every key served); without it the cache stays off under auth")
    a("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    a("--debug", action="store_true", help="as etcd's: --log-level debug")
    # with etcd 3.5's grpc-proxy keepalive flags (3.4's proxy left grpc's 5-minute minimum,
    # which cut off clients pinging every 30 s, Kubernetes' apiserver among them: etcd PR 11711)
    etcd_flags.add_client_connection_flags(start)
    etcd_flags.add_etcd_only_flags(start, etcd_flags.PROXY_NO_EFFECT, etcd_flags.PROXY_UNSUPPORTED)
    # Set by the supervisor of --workers N for each worker it starts (proxy/workers.py).
    a("--worker-metrics-dir", default="", help=argparse.SUPPRESS)
    return parser


def config_from_args(args: argparse.Namespace) -> ProxyConfig:
    if args.auto_tls and not (args.cert_file or args.key_file or args.trusted_ca_file):
        generated = self_signed(TLSInfo(), os.path.join(args.data_dir, "fixtures", "proxy"),
                                ["https://" + listen_hostport(args.listen_addr)])
        args.cert_file, args.key_file = generated.cert_file, generated.key_file
    return ProxyConfig(
        endpoints=args.endpoints, listen_addr=args.listen_addr, metrics_addr=args.metrics_addr,
        namespace=args.namespace, cert=args.cert, key=args.key, cacert=args.cacert,
        cert_file=args.cert_file, key_file=args.key_file, trusted_ca_file=args.trusted_ca_file,
        max_send_bytes=args.max_send_bytes, max_recv_bytes=args.max_recv_bytes, workers=args.workers,
        cache_max_entries=args.cache_max_entries, cache_max_bytes=args.cache_max_bytes,
        max_requests_per_client_per_second=args.max_requests_per_client_per_second,
        max_requests_per_key_per_second=args.max_requests_per_key_per_second,
        cache_user=args.cache_user,
        linearizable_read_interval_ms=args.linearizable_read_interval_ms,
        max_concurrent_streams=args.max_concurrent_streams,
        grpc_keepalive_min_time=args.grpc_keepalive_min_time,
        grpc_keepalive_interval=args.grpc_keepalive_interval,
        grpc_keepalive_timeout=args.grpc_keepalive_timeout,
    )


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(process)d %(message)s")


async def serve(config: ProxyConfig, *, worker_metrics_dir: str = "") -> None:
    """Run one proxy process until SIGTERM/SIGINT.

    As a worker of `--workers N` (worker_metrics_dir set): bind with SO_REUSEPORT, serve no
    metrics endpoint, publish metrics to the supervisor's directory instead.
    """
    worker = bool(worker_metrics_dir)
    server = ProxyServer(config, reuse_port=worker, serve_metrics=not worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    publisher = None
    if worker:
        from monitoring.multiprocess import SnapshotPublisher

        publisher = SnapshotPublisher(worker_metrics_dir, server.registry)
        await publisher.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
        if publisher is not None:
            await publisher.stop()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    configure_logging("debug" if args.debug else args.log_level)
    try:
        flag_messages = etcd_flags.check_etcd_only(args, etcd_flags.PROXY_NO_EFFECT,
                                                   etcd_flags.PROXY_UNSUPPORTED, "kvproxy")
    except ValueError as exc:
        print(f"kvproxy: {exc}", file=sys.stderr)
        return 2
    for level, message in flag_messages:
        logging.getLogger("proxy.flags").log(level, message)
    config = config_from_args(args)
    cpu_policy.configure()  # before any thread starts; --workers' processes inherit it
    if config.workers > 1:
        from .workers import run_workers

        return run_workers(config, argv)
    uvloop.run(serve(config, worker_metrics_dir=args.worker_metrics_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
