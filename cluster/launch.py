"""Launching local processes: free ports, process groups that always clean up, and the flags of
an n-member cluster.

One `ClusterSpec` describes a cluster for etcd 3.4.23 and for `kvcluster` alike, because our member
takes etcd's flags. Used at run time by `kvcluster local` and `kvbench compare`, and by the tests.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

LOOPBACK = "127.0.0.1"
# Our processes run under the current interpreter, so the code run is this checkout's.
KVCLUSTER = [sys.executable, "-m", "cluster.cli"]
KVPROXY = [sys.executable, "-m", "proxy.cli"]


_handed_out: set[int] = set()
_rng = random.Random()


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free when asked, below the kernel's ephemeral range: a
    port the OS picked (bind to 0) can be taken again by any outgoing connection before our
    server binds it, one below that range cannot. Never the same port twice in one process."""
    ceiling = _ephemeral_floor()
    for _ in range(1000):
        port = _rng.randrange(max(1024, ceiling - 12000), ceiling)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free TCP port below the ephemeral range")


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it is true; raise TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class ProcessGroup:
    """Starts subprocesses and guarantees they are gone when `close()` runs.

    Each process runs in its own session so that `close()` can kill its whole process group
    (workers and children included). Output goes to a log file under `log_dir`, whose tail is
    available for assertion messages through `log_tail(name)`. Their TMPDIR is `log_dir/tmp`, so
    what a SIGKILLed process leaves there (a proxy supervisor's worker-metrics dir, say) goes
    away with `log_dir` instead of piling up in /tmp. They do not inherit `ETCD_*` variables
    (only those `start` is given): their flags are all on their command lines, and etcd and
    kvcluster refuse to start when a flag is given both ways (cluster/etcd_flags.py).
    """

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self._replaced: list[subprocess.Popen] = []  # still running when their name was reused
        self._tmp_dir = os.path.join(log_dir, "tmp")
        os.makedirs(self._tmp_dir, exist_ok=True)

    def start(self, name: str, argv: Sequence[str], env: dict | None = None) -> subprocess.Popen:
        log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**{k: v for k, v in os.environ.items() if not k.startswith("ETCD_")},
                                         "TMPDIR": self._tmp_dir, **(env or {})},
        )
        log.close()
        previous = self.procs.get(name)
        if previous is not None and previous.poll() is None:
            self._replaced.append(previous)  # another cluster with the same member names
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 40) -> str:
        try:
            with open(os.path.join(self.log_dir, f"{name}.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self, name: str, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
        """Signal the process group of `name` and reap it (SIGKILL if it outlives `wait`)."""
        proc = self.procs.pop(name, None)
        if proc is not None:
            _kill_group(proc, sig, wait)

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGKILL)
        for proc in self._replaced:
            _kill_group(proc, signal.SIGKILL, 10.0)
        self._replaced = []


def _kill_group(proc: subprocess.Popen, sig: int, wait: float) -> None:
    """Signal `proc`'s process group and reap it (SIGKILL if it outlives `wait`)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=wait)



@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    metrics_port: int
    data_dir: str
    client_scheme: str = "http"  # "https": TLS client URLs (give the cert flags in extra_flags)
    peer_scheme: str = "http"  # "https": TLS peer URLs

    @property
    def client_url(self) -> str:
        return f"{self.client_scheme}://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.peer_scheme}://{LOOPBACK}:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}"

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.client_port}"


@dataclass
class ClusterSpec:
    """Names, ports and data dirs for an n-member cluster; `argv(member)` gives etcd's flags."""

    members: list[Member]
    token: str = "kvstack-cluster"
    extra_flags: list[str] = field(default_factory=list)

    @classmethod
    def allocate(cls, base_dir: str, size: int, extra_flags: list[str] | None = None, *,
                 client_scheme: str = "http", peer_scheme: str = "http") -> "ClusterSpec":
        members = [
            Member(f"m{i}", free_port(), free_port(), free_port(), os.path.join(base_dir, f"m{i}.data"),
                   client_scheme, peer_scheme)
            for i in range(1, size + 1)
        ]
        return cls(members, extra_flags=list(extra_flags or []))

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    @property
    def metrics_urls(self) -> list[str]:
        return [m.metrics_url for m in self.members]

    def argv(self, m: Member) -> list[str]:
        return [
            "--name", m.name, "--data-dir", m.data_dir,
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--listen-metrics-urls", m.metrics_url,
            *self.extra_flags,
        ]


@dataclass
class ProxySpec:
    """Where a proxy listens for clients and metrics, and the endpoints (host:port,...) it forwards to."""

    endpoints: str
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)

    @property
    def listen_addr(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}"

    def argv(self) -> list[str]:
        """`start` plus `etcd grpc-proxy start`'s flags, which `kvproxy start` takes too."""
        return ["start", "--endpoints", self.endpoints, "--listen-addr", self.listen_addr,
                "--metrics-addr", self.metrics_url]
