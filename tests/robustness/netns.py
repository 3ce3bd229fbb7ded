"""A cluster whose members each run in their own network namespace, for network faults.

Layout: one bridge in the root namespace (10.<a>.<b>.1/24), and per member a netns with a veth
pair (host end on the bridge, member end 10.<a>.<b>.<10+i>). Test clients in the root namespace
reach members through the bridge. A blackhole of member i sets its host-side veth down: it then
exchanges no packets with anyone (peers or clients) until the link is set up again.

This sandbox has `ip netns` and veth but neither the netem qdisc nor iptables, so delay, jitter
and probabilistic drop are not available this way (see docs/robustness.md).
"""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass

from cluster.launch import ClusterSpec, Member, free_port


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def netns_available() -> bool:
    """Can we create a namespace and a veth pair here (root, iproute2)?"""
    tag = f"rbp{os.getpid() % 100000}"
    try:
        _ip("netns", "add", tag)
    except (OSError, subprocess.CalledProcessError):
        return False
    try:
        _ip("link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
        _ip("link", "del", f"{tag}a")
        return True
    except subprocess.CalledProcessError:
        return False
    finally:
        subprocess.run(["ip", "netns", "del", tag], capture_output=True)


@dataclass
class NsMember(Member):
    """A member listening on its namespace's address instead of loopback."""

    host: str = ""
    netns: str = ""
    veth: str = ""   # host-side end: down = blackholed

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"


class NetnsNetwork:
    """Creates (and on `close()` removes) the bridge, namespaces and veth pairs for n members."""

    def __init__(self, base_dir: str, size: int):
        self.tag = f"{random.randrange(16 ** 4):04x}"
        a, b = random.randrange(64, 120), random.randrange(1, 250)
        self.bridge = f"rb{self.tag}br"
        self.created: list[tuple[str, str]] = []
        _ip("link", "add", self.bridge, "type", "bridge")
        self.created.append(("link", self.bridge))
        _ip("addr", "add", f"10.{a}.{b}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        members = []
        for i in range(1, size + 1):
            ns, h, n = f"rb{self.tag}m{i}", f"rb{self.tag}h{i}", f"rb{self.tag}n{i}"
            _ip("netns", "add", ns)
            self.created.append(("netns", ns))
            _ip("link", "add", h, "type", "veth", "peer", "name", n)
            self.created.append(("link", h))
            _ip("link", "set", n, "netns", ns)
            _ip("link", "set", h, "master", self.bridge)
            _ip("link", "set", h, "up")
            host = f"10.{a}.{b}.{10 + i}"
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{host}/24", "dev", n)
            _ip("netns", "exec", ns, "ip", "link", "set", n, "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
            members.append(NsMember(f"m{i}", free_port(), free_port(), free_port(),
                                    os.path.join(base_dir, f"m{i}.data"), host=host, netns=ns, veth=h))
        self.spec = ClusterSpec(members)

    def set_link(self, m: NsMember, up: bool) -> None:
        _ip("link", "set", m.veth, "up" if up else "down")

    def close(self) -> None:
        for kind, name in reversed(self.created):
            subprocess.run(["ip", kind, "del", name], capture_output=True)
