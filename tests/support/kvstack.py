"""Our own processes under test: `kvcluster` members and `kvproxy` instances.

Members take exactly etcd's flags, so one `cluster.launch.ClusterSpec` describes both stacks and the
same test can run against either.
"""

from __future__ import annotations

from cluster.launch import KVCLUSTER, KVPROXY, ClusterSpec, ProcessGroup, ProxySpec, port_open, wait_until


def start_kv_cluster(procs: ProcessGroup, spec: ClusterSpec, timeout: float = 30.0,
                     extra_flags: list[str] | None = None) -> ClusterSpec:
    """Start a `kvcluster` member per member of `spec` and wait until each serves clients."""
    for m in spec.members:
        procs.start(f"kv-{m.name}", [*KVCLUSTER, *spec.argv(m), *(extra_flags or [])])
    for m in spec.members:
        wait_until(lambda m=m: port_open(m.client_port), timeout,
                   f"kvcluster {m.name} on :{m.client_port}\n{procs.log_tail('kv-' + m.name)}")
    return spec


def start_kvproxy(procs: ProcessGroup, upstream: ClusterSpec, name: str = "kvproxy",
                  extra_flags: list[str] | None = None, timeout: float = 30.0) -> ProxySpec:
    """Start `kvproxy start` in front of `upstream` and wait until it accepts clients."""
    spec = ProxySpec(upstream.endpoints)
    procs.start(name, [*KVPROXY, *spec.argv(), *(extra_flags or [])])
    wait_until(lambda: port_open(spec.port), timeout, f"{name} on :{spec.port}\n{procs.log_tail(name)}")
    return spec
