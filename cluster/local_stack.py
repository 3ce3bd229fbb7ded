"""`kvcluster local`: a development stack of N members plus a proxy, on this machine.

It runs each member and the proxy as a child process with etcd's flags, prints the endpoints and
some etcdctl commands to try, and supervises until Ctrl-C (SIGINT) or SIGTERM: then it sends
SIGTERM to every child (a member that leads hands leadership over before it exits), waits, and
SIGKILLs what is left. A child that dies meanwhile is reported and left down, so that failover
can be tried by hand (kill a member, watch the cluster carry on).

Ports: by default etcd's own local layout (clients 2379, 22379, 32379, ...; peers one above;
metrics two above; the proxy on 23790 with metrics on 23791; Prometheus on 9090).
`--ephemeral-ports` picks free ports instead, for tests and for running beside another stack.

`--with-prometheus` also runs a Prometheus server (Debian `prometheus`, when installed) that
scrapes every member and the proxy with monitoring/prometheus.yml's jobs and alert rules.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from monitoring import config_render

from .launch import KVCLUSTER, KVPROXY, LOOPBACK, ClusterSpec, Member, ProcessGroup, ProxySpec, free_port, port_open, wait_until

PROXY_PORT = 23790
PROMETHEUS_PORT = 9090
STARTUP_TIMEOUT_S = 60.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvcluster local", description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=3, help="cluster size (default 3)")
    p.add_argument("--data-dir", default="kvcluster-local.data",
                   help="where members keep their data and the stack its logs; reused on restart")
    p.add_argument("--proxy-workers", type=int, default=1, help="kvproxy --workers (default 1)")
    p.add_argument("--no-proxy", action="store_true", help="start the members only")
    p.add_argument("--ephemeral-ports", action="store_true", help="use free ports, not etcd's local layout")
    p.add_argument("--with-prometheus", action="store_true",
                   help="also run Prometheus scraping the stack, with our alert rules (needs `prometheus`)")
    return p


def client_port(i: int) -> int:
    """etcd's local layout: 2379 for the first member, then 22379, 32379, ..."""
    return 2379 if i == 0 else 12379 + 10000 * i


def plan(args: argparse.Namespace) -> tuple[ClusterSpec, ProxySpec | None]:
    """Names, ports and data dirs of the members and the proxy."""
    data_dir = os.path.abspath(args.data_dir)
    if args.ephemeral_ports:
        spec = ClusterSpec.allocate(data_dir, args.members)
    else:
        spec = ClusterSpec([Member(f"m{i + 1}", client_port(i), client_port(i) + 1, client_port(i) + 2,
                                   os.path.join(data_dir, f"m{i + 1}.data")) for i in range(args.members)])
    spec.token = "kvcluster-local"
    proxy = None
    if not args.no_proxy:
        proxy = ProxySpec(spec.endpoints) if args.ephemeral_ports else ProxySpec(spec.endpoints, PROXY_PORT, PROXY_PORT + 1)
    return spec, proxy


def start(procs: ProcessGroup, spec: ClusterSpec, proxy: ProxySpec | None, workers: int) -> None:
    """Start every member, then the proxy, and return once each accepts connections."""
    for m in spec.members:
        if port_open(m.client_port) or port_open(m.peer_port):
            raise SystemExit(f"kvcluster local: port {m.client_port} or {m.peer_port} is taken "
                             "(another stack running? try --ephemeral-ports)")
        procs.start(m.name, [*KVCLUSTER, *spec.argv(m)])
    for m in spec.members:
        wait_until(lambda m=m: port_open(m.client_port) or _exited(procs, m.name), STARTUP_TIMEOUT_S,
                   f"member {m.name} on :{m.client_port}")
        if _exited(procs, m.name):
            raise SystemExit(f"kvcluster local: member {m.name} failed to start:\n{procs.log_tail(m.name)}")
    if proxy is not None:
        procs.start("proxy", [*KVPROXY, *proxy.argv(), "--workers", str(workers)])
        wait_until(lambda: port_open(proxy.port) or _exited(procs, "proxy"), STARTUP_TIMEOUT_S,
                   f"proxy on :{proxy.port}")
        if _exited(procs, "proxy"):
            raise SystemExit(f"kvcluster local: the proxy failed to start:\n{procs.log_tail('proxy')}")


def start_prometheus(spec: ClusterSpec, proxy: ProxySpec | None, data_dir: str, log_dir: str,
                     port: int) -> config_render.PrometheusProcess | None:
    """Start Prometheus on the stack's metrics URLs; None (and a note) when it is not installed."""
    if config_render.prometheus_binary() is None:
        print("kvcluster local: --with-prometheus: `prometheus` is not installed "
              "(Debian: apt-get install prometheus); running without it", flush=True)
        return None
    with open(os.path.join(log_dir, "prometheus.log"), "ab") as log:
        prom = config_render.start_prometheus(spec.metrics_urls, [proxy.metrics_url] if proxy else [],
                                              os.path.join(data_dir, "prometheus"), f"{LOOPBACK}:{port}", log=log)
    wait_until(lambda: prom.ready() or prom.process.poll() is not None, STARTUP_TIMEOUT_S, "Prometheus ready")
    if prom.process.poll() is not None:
        raise SystemExit(f"kvcluster local: Prometheus failed to start (see {log_dir}/prometheus.log)")
    return prom


def describe(spec: ClusterSpec, proxy: ProxySpec | None, log_dir: str,
             prom: config_render.PrometheusProcess | None) -> str:
    """What a person needs to use the stack: endpoints, metrics URLs and commands to try."""
    lines = [f"kvcluster local: {len(spec.members)} members" + (" + proxy" if proxy else "") + " running", ""]
    for m in spec.members:
        lines.append(f"  member {m.name:<4} client {m.client_url}  peer {m.peer_url}  metrics {m.metrics_url}/metrics")
    if proxy:
        lines.append(f"  proxy       client http://{proxy.listen_addr}  metrics {proxy.metrics_url}/metrics")
    if prom:
        lines.append(f"  prometheus  {prom.url}  (alerts: {prom.url}/alerts)")
    target = proxy.listen_addr if proxy else spec.endpoints
    lines += [
        "", f"  logs: {log_dir}", "", "Try:",
        f"  etcdctl --endpoints {spec.endpoints} endpoint status -w table",
        f"  etcdctl --endpoints {target} put greeting hello",
        f"  etcdctl --endpoints {target} get greeting --consistency=s",
        f"  etcdctl --endpoints {target} watch greeting",
        "", "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def supervise(procs: ProcessGroup) -> None:
    """Report children that exit, until SIGINT/SIGTERM arrives."""
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    reported: set[str] = set()
    while not stopping:
        for name, proc in procs.procs.items():
            if name not in reported and proc.poll() is not None:
                reported.add(name)
                print(f"kvcluster local: {name} exited with code {proc.returncode} (left down)", flush=True)
        time.sleep(0.2)


def stop(procs: ProcessGroup) -> None:
    """SIGTERM every child (members first hand over leadership), then SIGKILL stragglers."""
    for name in list(procs.procs):
        procs.kill(name, signal.SIGTERM, wait=10.0)


def _exited(procs: ProcessGroup, name: str) -> bool:
    proc = procs.procs.get(name)
    return proc is not None and proc.poll() is not None


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    spec, proxy = plan(args)
    log_dir = os.path.join(os.path.abspath(args.data_dir), "logs")
    procs = ProcessGroup(log_dir)
    prom = None
    try:
        start(procs, spec, proxy, args.proxy_workers)
        if args.with_prometheus:
            port = free_port() if args.ephemeral_ports else PROMETHEUS_PORT
            prom = start_prometheus(spec, proxy, os.path.abspath(args.data_dir), log_dir, port)
        print(describe(spec, proxy, log_dir, prom), flush=True)
        supervise(procs)
        print("kvcluster local: stopping", flush=True)
        stop(procs)
    finally:
        if prom is not None:
            prom.stop()
        procs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
