"""Start the systems `kvbench compare` measures: etcd 3.4.23 or our members, and a proxy in front.

`cluster.launch.ClusterSpec` builds etcd's member flags; our `kvcluster` takes the same flags, so one
spec describes either stack. Every start function returns only
once the thing serves gRPC (a Range answers), not merely when its port is open.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from cluster.launch import KVCLUSTER, KVPROXY, LOOPBACK, ClusterSpec, ProcessGroup, ProxySpec, free_port, wait_until

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
NULL_SERVER = [sys.executable, "-m", "bench.null_server"]


def serves_grpc(endpoint: str) -> bool:
    """True when a linearizable Range on `endpoint` succeeds: for a member, that means the cluster
    has a leader (a serializable read would answer before that, and the first writes would fail
    with "no leader")."""
    try:
        with grpc.insecure_channel(endpoint) as ch:
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"kvbench-probe"), timeout=2)
        return True
    except grpc.RpcError:
        return False


def _wait_serving(procs: ProcessGroup, name: str, endpoint: str, timeout: float) -> None:
    def ready() -> bool:
        proc = procs.procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.log_tail(name)}")
        return serves_grpc(endpoint)
    wait_until(ready, timeout, f"{name} serving on {endpoint}\n{procs.log_tail(name)}", interval=0.2)


def start_etcd_cluster(procs: ProcessGroup, spec: ClusterSpec, timeout: float = 30.0) -> ClusterSpec:
    """Start etcd 3.4.23 for every member of `spec` and wait until each serves clients."""
    for m in spec.members:
        procs.start(f"etcd-{m.name}", [ETCD_BIN, *spec.argv(m)], env={"ETCD_UNSUPPORTED_ARCH": ""})
    for m in spec.members:
        _wait_serving(procs, f"etcd-{m.name}", m.endpoint, timeout)
    return spec


def start_kv_cluster(procs: ProcessGroup, spec: ClusterSpec, timeout: float = 60.0) -> ClusterSpec:
    """Start our `kvcluster` member per member of `spec` and wait until each serves clients."""
    for m in spec.members:
        procs.start(f"kv-{m.name}", [*KVCLUSTER, *spec.argv(m)])
    for m in spec.members:
        _wait_serving(procs, f"kv-{m.name}", m.endpoint, timeout)
    return spec


def start_etcd_proxy(procs: ProcessGroup, upstream: ClusterSpec, timeout: float = 30.0) -> ProxySpec:
    """Start `etcd grpc-proxy start` in front of `upstream`."""
    spec = ProxySpec(upstream.endpoints)
    procs.start("etcd-grpc-proxy", [ETCD_BIN, "grpc-proxy", *spec.argv()], env={"ETCD_UNSUPPORTED_ARCH": ""})
    _wait_serving(procs, "etcd-grpc-proxy", spec.listen_addr, timeout)
    return spec


def start_kvproxy(procs: ProcessGroup, upstream: ClusterSpec, timeout: float = 60.0) -> ProxySpec:
    """Start `kvproxy start` in front of `upstream`."""
    spec = ProxySpec(upstream.endpoints)
    procs.start("kvproxy", [*KVPROXY, *spec.argv()])
    _wait_serving(procs, "kvproxy", spec.listen_addr, timeout)
    return spec


def start_null_server(procs: ProcessGroup, timeout: float = 30.0) -> str:
    """Start the do-nothing grpc.aio server (bench/null_server.py); returns its endpoint."""
    endpoint = f"{LOOPBACK}:{free_port()}"
    procs.start("null-server", [*NULL_SERVER, "--listen-addr", endpoint])
    _wait_serving(procs, "null-server", endpoint, timeout)
    return endpoint


def our_stack_unavailable_reason(cwd: str | None = None) -> str | None:
    """None when `cluster.cli --help` and `proxy.cli start --help` both run; else why not."""
    for argv in ([*KVCLUSTER, "--help"], [*KVPROXY, "start", "--help"]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(argv[1:])}` did not answer within 60 s"
        if out.returncode != 0:
            last = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
            return f"`{' '.join(argv[1:])}` exited with {out.returncode}: {last[0]}"
    return None
