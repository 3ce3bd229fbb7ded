"""Reusable 3-member clusters for interop tests: a reference etcd 3.4.23 and a `kvcluster`, each
with ports from free_port(), started with the same flags (cluster.launch.ClusterSpec), plus how
to start one more member of the same kind that joins the running cluster.

    with three_member_cluster("etcd", base_dir) as cluster: ...   # or "kv"

`ThreeMembers.join(name, peer_url_port)` starts a member with --initial-cluster-state existing
and the --initial-cluster `etcdctl member add` prints, as an operator would.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from cluster.launch import KVCLUSTER, ClusterSpec, Member, ProcessGroup, free_port, port_open, wait_until
from tests.support.etcd_ref import ETCD_BIN, start_etcd_cluster
from tests.support.kvstack import start_kv_cluster

from .etcdctl import Etcdctl

START_TIMEOUT = 60.0


@dataclass
class ThreeMembers:
    """A running 3-member cluster of `kind` ("etcd" or "kv")."""

    kind: str
    spec: ClusterSpec
    procs: ProcessGroup
    base_dir: str

    @property
    def ctl(self) -> Etcdctl:
        """etcdctl on the first member."""
        return Etcdctl(self.spec.members[0].endpoint)

    def new_member(self, name: str) -> Member:
        return Member(name, free_port(), free_port(), free_port(), os.path.join(self.base_dir, f"{name}.data"))

    def join(self, m: Member, initial_cluster: str) -> None:
        """Start `m` joining the running cluster; return once it serves clients."""
        argv = ["--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", initial_cluster, "--initial-cluster-state", "existing",
                "--initial-cluster-token", self.spec.token, "--listen-metrics-urls", m.metrics_url]
        if self.kind == "etcd":
            self.procs.start(f"etcd-{m.name}", [ETCD_BIN, *argv], env={"ETCD_UNSUPPORTED_ARCH": ""})
        else:
            self.procs.start(f"kv-{m.name}", [*KVCLUSTER, *argv])
        wait_until(lambda: port_open(m.client_port), START_TIMEOUT, f"{self.kind} {m.name} joined")


@contextlib.contextmanager
def three_member_cluster(kind: str, base_dir: str):
    """Start a 3-member `kind` cluster under `base_dir`, healthy; stop it on exit."""
    procs = ProcessGroup(os.path.join(base_dir, "logs"))
    try:
        spec = ClusterSpec.allocate(base_dir, 3)
        if kind == "etcd":
            start_etcd_cluster(procs, spec, timeout=START_TIMEOUT)
        else:
            start_kv_cluster(procs, spec, timeout=START_TIMEOUT)
        ctl = Etcdctl(spec.endpoints)
        wait_until(lambda: ctl.run(["endpoint", "health", "--cluster"]).rc == 0, START_TIMEOUT,
                   f"{kind} 3 members healthy")
        yield ThreeMembers(kind, spec, procs, base_dir)
    finally:
        procs.close()
