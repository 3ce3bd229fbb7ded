"""A cluster (etcd 3.4.23 or ours, same flags) whose peer links all pass through a `FaultRelay`.

Each member listens for peers on its real peer port (--listen-peer-urls) but advertises its relay
port (--initial-advertise-peer-urls, and the --initial-cluster entries), so peers dial the relay.
Clients still talk to the members directly: only peer links are faulted.

`start_relayed_stack` starts the relay first, then the members, and returns a `Stack` whose
`relay` the network fault cases drive (faults.py). The relay attributes a connection to the member
whose process owns the dialing socket (pids from the stack's ProcessGroup); the relay names members
by `link_name` (their relay port).
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.launch import LOOPBACK, ClusterSpec, Member, ProcessGroup, free_port

from .faults import Stack
from .relay import FaultRelay, pid_owning_dialer


@dataclass
class RelayedMember(Member):
    """A member whose peers reach it through `relay_port`."""

    relay_port: int = 0

    @property
    def relay_url(self) -> str:
        return f"http://{LOOPBACK}:{self.relay_port}"


class RelayedClusterSpec(ClusterSpec):
    """etcd's flags with the advertised peer URLs pointing at the relay."""

    @classmethod
    def allocate(cls, base_dir: str, size: int, extra_flags: list[str] | None = None) -> "RelayedClusterSpec":
        base = ClusterSpec.allocate(base_dir, size, extra_flags)
        members = [RelayedMember(m.name, m.client_port, m.peer_port, m.metrics_port, m.data_dir,
                                 relay_port=free_port()) for m in base.members]
        return cls(members, extra_flags=base.extra_flags)

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.relay_url}" for m in self.members)

    def argv(self, m: RelayedMember) -> list[str]:
        argv = super().argv(m)
        argv[argv.index("--initial-advertise-peer-urls") + 1] = m.relay_url
        return argv


def link_name(m: RelayedMember) -> str:
    """How the relay names a member: by its relay port, which a replacement member keeps (a
    member replaced by `m1r1` keeps m1's ports), so faults find it under its new name too."""
    return str(m.relay_port)


def start_relayed_stack(procs: ProcessGroup, base_dir: str, kind: str, seed: int,
                        extra_flags: list[str] | None = None, member_env: dict | None = None) -> Stack:
    """Relay up, then 3 members of `kind` ("etcd" / "kv"), each serving clients."""
    spec = RelayedClusterSpec.allocate(base_dir, 3, extra_flags)
    stack = Stack(procs, spec, kind, member_env=member_env or {})

    def origin_of(port: int) -> str | None:
        pids = {}
        for m in spec.members:
            p = procs.procs.get(stack.pname(m))
            if p is not None and p.poll() is None:
                pids[p.pid] = link_name(m)
        pid = pid_owning_dialer(port, list(pids))
        return pids.get(pid)

    stack.relay = FaultRelay({link_name(m): (m.relay_port, m.peer_port) for m in spec.members},
                             origin_of, seed=seed).start()
    return stack.start_all()
