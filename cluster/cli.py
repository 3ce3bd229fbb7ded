"""`kvcluster`: run one member with etcd's flags (also `python -m cluster.cli`).

Flags are etcd 3.4's spellings and defaults. The peer and cluster flags give the member its
identity (member and cluster IDs, MemberList) and configure replication (Member's ReplicatedLog).
Logs: one JSON object per line on stderr (level, ts, logger, msg, then the event's fields), at
--log-level (default warn: quiet; info adds lifecycle events).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

import uvloop

from cluster import cpu_policy, etcd_flags, grpc_runtime

grpc_runtime.configure()  # before anything below imports grpc

from cluster.server.auth.tokens import build_token_provider  # noqa: E402
from cluster.etcd_flags import parse_duration  # noqa: E402
from cluster.server.gc_policy import settle_after_start  # noqa: E402
from cluster.server.member import Member, MemberConfig, host_port  # noqa: E402
from cluster.tls import TLSInfo, check_urls, is_tls_url, self_signed  # noqa: E402


class JsonLineFormatter(logging.Formatter):
    """One JSON object per log record; structured fields come from `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "level": record.levelname.lower(),
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, outputs: list[str] | None = None) -> None:
    """Root logging at `level`, as JSON lines to etcd's --log-outputs targets: "default" and
    "stderr" (stderr), "stdout", or a file path (appended to)."""
    handlers = []
    for target in outputs or ["default"]:
        if target in ("default", "stderr"):
            handlers.append(logging.StreamHandler(sys.stderr))
        elif target == "stdout":
            handlers.append(logging.StreamHandler(sys.stdout))
        else:
            handlers.append(logging.FileHandler(target))
    root = logging.getLogger()
    for handler in handlers:
        handler.setFormatter(JsonLineFormatter())
    root.handlers[:] = handlers
    root.setLevel({"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
                   "error": logging.ERROR, "panic": logging.CRITICAL,
                   "fatal": logging.CRITICAL}[level])


def _urls(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def _count(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev off: Go's flag package takes no abbreviations, and an ETCD_* variable must
    # conflict with its flag exactly when etcd says it does (etcd_flags.py)
    p = argparse.ArgumentParser(prog="kvcluster", description="A kvstack member (etcd v3 API).",
                                allow_abbrev=False)
    a = p.add_argument
    a("--name", default="default")
    a("--data-dir", default=None, help="default: ${name}.etcd")
    a("--listen-client-urls", type=_urls, default=["http://localhost:2379"])
    a("--advertise-client-urls", type=_urls, default=["http://localhost:2379"])
    a("--listen-metrics-urls", type=_urls, default=[])
    a("--listen-peer-urls", type=_urls, default=["http://localhost:2380"])
    a("--initial-advertise-peer-urls", type=_urls, default=["http://localhost:2380"])
    a("--initial-cluster", default=None, help="default: ${name}=http://localhost:2380")
    a("--initial-cluster-state", choices=["new", "existing"], default="new")
    a("--initial-cluster-token", default="etcd-cluster")
    a("--max-request-bytes", type=int, default=1572864)
    a("--quota-backend-bytes", type=int, default=0)
    a("--max-txn-ops", type=int, default=128)
    a("--heartbeat-interval", type=int, default=100, help="ms")
    a("--election-timeout", type=int, default=1000, help="ms")
    a("--snapshot-count", type=int, default=100000)
    a("--experimental-snapshot-catchup-entries", type=int, default=5000,
      help="entries kept in the Raft log behind a snapshot for slow followers (etcd 3.5's flag)")
    a("--auto-compaction-mode", choices=["periodic", "revision"], default="periodic")
    a("--auto-compaction-retention", default="0")
    a("--cert-file", default="", help="client server TLS cert file")
    a("--key-file", default="", help="client server TLS key file")
    a("--trusted-ca-file", default="", help="client server TLS trusted CA cert file")
    a("--client-cert-auth", type=etcd_flags.go_bool, nargs="?", const=True, default=False,
      help="require and verify client certificates (signed by --trusted-ca-file)")
    a("--auto-tls", type=etcd_flags.go_bool, nargs="?", const=True, default=False,
      help="client TLS using a generated self-signed certificate")
    a("--peer-cert-file", default="", help="peer server TLS cert file")
    a("--peer-key-file", default="", help="peer server TLS key file")
    a("--peer-trusted-ca-file", default="", help="peer server TLS trusted CA file")
    a("--peer-client-cert-auth", type=etcd_flags.go_bool, nargs="?", const=True, default=False,
      help="require and verify peer client certificates (signed by --peer-trusted-ca-file)")
    a("--log-level", choices=["debug", "info", "warn", "error", "panic", "fatal"], default="warn")
    a("--logger", default="zap", help="accepted for etcd compatibility; logs are always JSON lines")
    a("--experimental-watch-progress-notify-interval", default="10m",
      help="period of watch progress notifications (etcd's experimental flag)")
    a("--auth-token", default="simple",
      help='"simple" or "jwt,pub-key=<path>,priv-key=<path>,sign-method=<alg>,ttl=<duration>"')
    a("--auth-token-ttl", type=int, default=300, help="seconds a simple token lives after its last use")
    a("--experimental-local-log", action="store_true",
      help="ours, not etcd's: a single member without Raft, on the fsync'd local log")
    a("--wal-dir", default="", help="dedicated WAL directory (default: <data-dir>/member/wal)")
    a("--max-snapshots", type=_count, default=5, help="snapshot files to retain (0 is unlimited)")
    a("--max-wals", type=_count, default=5, help="WAL files to retain (0 is unlimited)")
    a("--strict-reconfig-check", type=etcd_flags.go_bool, nargs="?", const=True, default=True,
      help="reject reconfiguration requests that would cause quorum loss")
    a("--pre-vote", type=etcd_flags.go_bool, nargs="?", const=True, default=True,
      help="run a pre-vote phase before elections (default true here, as etcd 3.5; etcd 3.4: false)")
    a("--initial-election-tick-advance", type=etcd_flags.go_bool, nargs="?", const=True, default=True,
      help="fast-forward the election ticks on boot, for a faster first election")
    etcd_flags.add_client_connection_flags(p)
    a("--experimental-warning-apply-duration", type=parse_duration, default="100ms",
      help="log a warning and count etcd_server_slow_apply_total for applies that take longer")
    a("--debug", type=etcd_flags.go_bool, nargs="?", const=True, default=False,
      help="deprecated in etcd 3.4: --log-level debug")
    a("--log-outputs", type=_urls, default=["default"],
      help="comma-separated: default, stderr, stdout, or file paths (appended to)")
    etcd_flags.add_etcd_only_flags(p, etcd_flags.MEMBER_NO_EFFECT, etcd_flags.MEMBER_UNSUPPORTED)
    return p


def config_from_args(args: argparse.Namespace) -> MemberConfig:
    """The member configuration; raises ValueError for URLs we cannot serve (with etcd's message
    when it has one: an https:// URL without certificate and key, for instance)."""
    for url in (*args.listen_client_urls, *args.listen_metrics_urls):
        host_port(url)
    data_dir = args.data_dir or f"{args.name}.etcd"
    client_tls = TLSInfo(args.cert_file, args.key_file, args.trusted_ca_file, args.client_cert_auth)
    if args.auto_tls and any(is_tls_url(u) for u in args.listen_client_urls):
        client_tls = self_signed(client_tls, os.path.join(data_dir, "fixtures", "client"),
                                 [*args.listen_client_urls, *args.advertise_client_urls])
    peer_tls = TLSInfo(args.peer_cert_file, args.peer_key_file, args.peer_trusted_ca_file,
                       args.peer_client_cert_auth)
    check_urls(client_tls, peer_tls, client_urls=args.listen_client_urls,
               metrics_urls=args.listen_metrics_urls,
               peer_urls=[*args.listen_peer_urls, *args.initial_advertise_peer_urls])
    build_token_provider(args.auth_token, args.auth_token_ttl)  # refuse bad --auth-token early
    return MemberConfig(
        name=args.name,
        data_dir=data_dir,
        client_tls=client_tls,
        peer_tls=peer_tls,
        listen_client_urls=args.listen_client_urls,
        advertise_client_urls=args.advertise_client_urls,
        listen_metrics_urls=args.listen_metrics_urls,
        listen_peer_urls=args.listen_peer_urls,
        initial_advertise_peer_urls=args.initial_advertise_peer_urls,
        initial_cluster=args.initial_cluster or f"{args.name}=" + ",".join(args.initial_advertise_peer_urls),
        initial_cluster_state=args.initial_cluster_state,
        initial_cluster_token=args.initial_cluster_token,
        max_request_bytes=args.max_request_bytes,
        quota_backend_bytes=args.quota_backend_bytes,
        max_txn_ops=args.max_txn_ops,
        heartbeat_interval_ms=args.heartbeat_interval,
        election_timeout_ms=args.election_timeout,
        snapshot_count=args.snapshot_count,
        snapshot_catchup_entries=args.experimental_snapshot_catchup_entries,
        auto_compaction_mode=args.auto_compaction_mode,
        auto_compaction_retention=args.auto_compaction_retention,
        # 0 keeps the default, as etcd
        watch_progress_notify_interval=parse_duration(args.experimental_watch_progress_notify_interval) or 600.0,
        local_log=args.experimental_local_log,
        auth_token=args.auth_token,
        auth_token_ttl=float(args.auth_token_ttl),
        wal_dir=args.wal_dir,
        max_snapshots=args.max_snapshots,
        max_wals=args.max_wals,
        strict_reconfig_check=args.strict_reconfig_check,
        pre_vote=args.pre_vote,
        initial_election_tick_advance=args.initial_election_tick_advance,
        grpc_keepalive_min_time=args.grpc_keepalive_min_time,
        grpc_keepalive_interval=args.grpc_keepalive_interval,
        grpc_keepalive_timeout=args.grpc_keepalive_timeout,
        max_concurrent_streams=args.max_concurrent_streams,
        warning_apply_duration=args.experimental_warning_apply_duration,
    )


async def run(cfg: MemberConfig) -> int:
    member = Member(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, member.request_stop)
    await member.start()
    settle_after_start()  # gc_policy.py: a tenth of the CPU under load went to collections
    await member.wait_stopped()
    await member.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["local"]:
        from . import local_stack

        return local_stack.main(argv[1:])
    if argv[:1] == ["snapshot"]:
        from . import snapshot_restore

        return snapshot_restore.main(argv[1:])
    parser = build_parser()
    try:
        argv, flag_messages = etcd_flags.prepare_argv(parser, argv, os.environ)
    except etcd_flags.EnvFlagError as exc:
        print(f"kvcluster: {exc}", file=sys.stderr)
        return 1  # as etcd
    args = parser.parse_args(argv)
    try:
        configure_logging("debug" if args.debug else args.log_level, args.log_outputs)
    except OSError as exc:
        print(f"kvcluster: cannot open --log-outputs: {exc}", file=sys.stderr)
        return 2
    try:
        flag_messages += etcd_flags.check_etcd_only(args, etcd_flags.MEMBER_NO_EFFECT,
                                                    etcd_flags.MEMBER_UNSUPPORTED, "kvcluster")
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"kvcluster: {exc}", file=sys.stderr)
        return 2
    for level, message in flag_messages:
        logging.getLogger("cluster.flags").log(level, message)
    cpu_policy.configure()  # before the member starts any thread
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            return runner.run(run(cfg))
        except ValueError as exc:  # a configuration the member refuses at start
            print(f"kvcluster: {exc}", file=sys.stderr)
            return 2




if __name__ == "__main__":
    sys.exit(main())
