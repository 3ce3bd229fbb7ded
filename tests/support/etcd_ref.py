"""Reference etcd 3.4.23 clusters (Debian `etcd-server`) started with the flags we accept too."""

from __future__ import annotations

import shutil

from bench.roles import member_status
from cluster.launch import ClusterSpec, ProcessGroup, port_open, wait_until

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL_BIN = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def start_etcd_cluster(procs: ProcessGroup, spec: ClusterSpec, timeout: float = 30.0) -> ClusterSpec:
    """Start etcd 3.4.23 for every member of `spec` and wait until each serves clients."""
    for m in spec.members:
        procs.start(f"etcd-{m.name}", [ETCD_BIN, *spec.argv(m)], env={"ETCD_UNSUPPORTED_ARCH": ""})
    for m in spec.members:
        wait_until(lambda m=m: port_open(m.client_port), timeout, f"etcd {m.name} on :{m.client_port}")
    return spec


def knows_leader(endpoint: str) -> bool:
    """Whether the plaintext etcd member at `endpoint` reports a leader (Maintenance.Status).
    etcd opens its client port before the first election; a write sent then waits for it."""
    status = member_status(endpoint)
    return status is not None and status[1] != 0
