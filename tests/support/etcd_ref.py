"""Reference etcd 3.4.23 clusters (Debian `etcd-server`) started with the flags we accept too."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from .procs import LOOPBACK, ProcessGroup, free_port, port_open, wait_until

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL_BIN = shutil.which("etcdctl") or "/usr/bin/etcdctl"


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    metrics_port: int
    data_dir: str

    @property
    def client_url(self) -> str:
        return f"http://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}"


@dataclass
class ClusterSpec:
    """Names, ports and data dirs for an n-member cluster; `argv(member)` gives etcd's flags."""

    members: list[Member]
    token: str = "test-cluster"
    extra_flags: list[str] = field(default_factory=list)

    @classmethod
    def allocate(cls, base_dir: str, size: int, extra_flags: list[str] | None = None) -> "ClusterSpec":
        members = [
            Member(f"m{i}", free_port(), free_port(), free_port(), os.path.join(base_dir, f"m{i}.data"))
            for i in range(1, size + 1)
        ]
        return cls(members, extra_flags=list(extra_flags or []))

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> str:
        return ",".join(f"{LOOPBACK}:{m.client_port}" for m in self.members)

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


def start_etcd_cluster(procs: ProcessGroup, spec: ClusterSpec, timeout: float = 30.0) -> ClusterSpec:
    """Start etcd 3.4.23 for every member of `spec` and wait until each serves clients."""
    for m in spec.members:
        procs.start(f"etcd-{m.name}", [ETCD_BIN, *spec.argv(m)], env={"ETCD_UNSUPPORTED_ARCH": ""})
    for m in spec.members:
        wait_until(lambda m=m: port_open(m.client_port), timeout, f"etcd {m.name} on :{m.client_port}")
    return spec
