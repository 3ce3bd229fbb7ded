"""Member and cluster identity, derived from the configuration exactly as etcd derives them.

etcd (membership.NewMember / RaftCluster.genID): a member's ID is the first 8 bytes (big endian)
of SHA-1 over its sorted peer URLs joined together followed by the cluster token; the cluster ID
is the first 8 bytes of SHA-1 over the sorted member IDs, each as 8 big-endian bytes. So the
same flags give the same IDs as a real etcd (checked against etcd 3.4.23).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field


def member_id(peer_urls: list[str], cluster_token: str) -> int:
    data = "".join(sorted(peer_urls)).encode() + cluster_token.encode()
    return struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0]


def cluster_id(member_ids: list[int]) -> int:
    data = b"".join(struct.pack(">Q", m) for m in sorted(member_ids))
    return struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0]


def parse_initial_cluster(spec: str) -> dict[str, list[str]]:
    """`n1=http://a:1,n1=http://b:2,n2=...` -> {name: [peer urls]} (etcd's --initial-cluster)."""
    members: dict[str, list[str]] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, url = item.partition("=")
        if not sep or not url:
            raise ValueError(f"bad --initial-cluster entry {item!r}")
        members.setdefault(name, []).append(url)
    return members


@dataclass
class MemberInfo:
    """What MemberList reports about one member."""

    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str] = field(default_factory=list)


@dataclass
class Membership:
    """The cluster as configured: this member, every member, and the cluster ID."""

    local: MemberInfo
    members: list[MemberInfo]
    cluster_id: int

    @classmethod
    def from_flags(cls, name: str, initial_cluster: str, initial_advertise_peer_urls: list[str],
                   advertise_client_urls: list[str], token: str) -> "Membership":
        configured = parse_initial_cluster(initial_cluster) if initial_cluster else {}
        if name not in configured:
            configured[name] = list(initial_advertise_peer_urls)
        members = [MemberInfo(member_id(urls, token), n, list(urls)) for n, urls in configured.items()]
        local = next(m for m in members if m.name == name)
        local.client_urls = list(advertise_client_urls)
        return cls(local, members, cluster_id([m.id for m in members]))
