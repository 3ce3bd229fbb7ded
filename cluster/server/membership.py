"""Member and cluster identity, derived from the configuration exactly as etcd derives them.

etcd (membership.NewMember / RaftCluster.genID): a member's ID is the first 8 bytes (big endian)
of SHA-1 over its sorted peer URLs joined together followed by the cluster token; the cluster ID
is the first 8 bytes of SHA-1 over the sorted member IDs, each as 8 big-endian bytes. So the
same flags give the same IDs as a real etcd (checked against etcd 3.4.23).

Published attributes: each member, after every start, proposes its name and client URLs through
the log (etcd's publish); applying that entry updates the member here on every member, so
MemberList reports every member's client URLs (what `etcdctl ... --cluster` dials). They are
kept in `members.json` beside the store, rewritten atomically when they change (on the apply
thread, before the batch commits: re-applying the entry after a crash writes the same thing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


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
    published_path: str | None = None  # members.json, once `load_published` ran

    def load_published(self, path: str) -> None:
        """Take the attributes applied before this start from `path` (absent: none yet)."""
        self.published_path = path
        try:
            with open(path) as f:
                saved = json.load(f)
        except FileNotFoundError:
            return
        for m in self.members:
            attrs = saved.get(f"{m.id:x}")
            if attrs and m is not self.local:  # our own come from this start's flags
                m.name, m.client_urls = attrs["name"], list(attrs["client_urls"])

    def apply_published(self, member_id: int, name: str, client_urls: list[str]) -> None:
        """Apply thread: a member published its attributes (an applied log entry)."""
        member = next((m for m in self.members if m.id == member_id), None)
        if member is None:
            log.warning("attributes published by an unknown member", extra={"fields": {
                "member_id": f"{member_id:x}", "name": name}})
            return
        if member.name == name and member.client_urls == list(client_urls) and self._saved(member):
            return
        member.name, member.client_urls = name, list(client_urls)
        if self.published_path is not None:
            self._save()

    def _saved(self, member: MemberInfo) -> bool:
        if self.published_path is None:
            return True
        try:
            with open(self.published_path) as f:
                attrs = json.load(f).get(f"{member.id:x}")
        except FileNotFoundError:
            return False
        return bool(attrs) and attrs == {"name": member.name, "client_urls": member.client_urls}

    def _save(self) -> None:
        data = {f"{m.id:x}": {"name": m.name, "client_urls": m.client_urls}
                for m in self.members if m.client_urls}
        tmp = self.published_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.published_path)

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
