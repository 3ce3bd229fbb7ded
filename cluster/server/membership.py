"""The cluster's membership: members (voters and learners), removed IDs, published attributes.

Identity, derived as etcd derives it (checked against etcd 3.4.23):
- a founding member's ID (`member_id`) is the first 8 bytes (big endian) of SHA-1 over its sorted
  peer URLs joined together followed by the cluster token (membership.NewMember);
- a member added at runtime (MemberAdd) gets `new_member_id`: the same over its sorted peer URLs,
  an empty cluster name (etcd's v3rpc passes "") and the current Unix time in seconds;
- the cluster ID is the first 8 bytes of SHA-1 over the sorted founding member IDs, each as 8
  big-endian bytes.

State and who changes it:
- `Membership` is read on the event loop (MemberList, checks, transport) and changed only on the
  apply thread (`apply_change`, `apply_published`), which replaces the members dict as a whole
  (copy on write), so a reader never sees a half-made change.
- It is persisted in the MVCC store's meta records (`encode`/`decode`), written by the apply
  batch that applied the change, in the same LMDB transaction as the applied index: a crash can
  neither lose a change nor apply it twice. The store is also the Raft snapshot image, so a
  member caught up by a leader snapshot gets the membership with the data (`reload`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import time
from dataclasses import dataclass, field, replace

from protos.etcdserverpb import rpc_pb2
from protos.kvpb import internal_pb2

log = logging.getLogger(__name__)

STORE_META_KEY = b"membership"
MAX_LEARNERS = 1  # etcd 3.4's maxLearners


def member_id(peer_urls: list[str], cluster_token: str, now: int | None = None) -> int:
    data = "".join(sorted(peer_urls)).encode() + cluster_token.encode()
    if now is not None:
        data += str(now).encode()
    return struct.unpack(">Q", hashlib.sha1(data).digest()[:8])[0]


def new_member_id(peer_urls: list[str]) -> int:
    """The ID etcd 3.4 gives a member added at runtime (v3rpc MemberAdd)."""
    return member_id(peer_urls, "", int(time.time()))


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


@dataclass(frozen=True)
class MemberInfo:
    """What MemberList reports about one member. `name` is empty until it published (etcd:
    an "unstarted" member)."""

    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False

    @property
    def started(self) -> bool:
        return bool(self.name)

    def to_pb(self) -> rpc_pb2.Member:
        return rpc_pb2.Member(ID=self.id, name=self.name, peerURLs=self.peer_urls,
                              clientURLs=self.client_urls, isLearner=self.is_learner)


class Membership:
    """The cluster as this member knows it: its own ID, the cluster ID, members, removed IDs."""

    def __init__(self, local_id: int, cluster_id_: int, members: list[MemberInfo],
                 removed: set[int] | None = None):
        self.local_id = local_id
        self.cluster_id = cluster_id_
        self._members = {m.id: m for m in members}
        self._removed = frozenset(removed or ())

    # -- reading (any thread) -------------------------------------------------------------------

    @property
    def members(self) -> list[MemberInfo]:
        return sorted(self._members.values(), key=lambda m: m.id)

    @property
    def local(self) -> MemberInfo:
        return self._members.get(self.local_id) or MemberInfo(self.local_id, "", [])

    def get(self, mid: int) -> MemberInfo | None:
        return self._members.get(mid)

    def is_removed(self, mid: int) -> bool:
        return mid in self._removed

    @property
    def removed(self) -> frozenset[int]:
        return self._removed

    def voters(self) -> list[MemberInfo]:
        return [m for m in self.members if not m.is_learner]

    def learners(self) -> list[MemberInfo]:
        return [m for m in self.members if m.is_learner]

    def member_with_peer_urls(self, urls: list[str]) -> MemberInfo | None:
        return next((m for m in self._members.values() if sorted(m.peer_urls) == sorted(urls)), None)

    def peer_url_in_use(self, urls: list[str], except_id: int = 0) -> bool:
        used = {u for m in self._members.values() if m.id != except_id for u in m.peer_urls}
        return any(u in used for u in urls)

    def to_pb(self) -> list[rpc_pb2.Member]:
        return [m.to_pb() for m in self.members]

    # -- persistence ------------------------------------------------------------------------------

    def encode(self) -> bytes:
        return json.dumps({
            "local_id": f"{self.local_id:x}", "cluster_id": f"{self.cluster_id:x}",
            "members": [{"id": f"{m.id:x}", "name": m.name, "peer_urls": m.peer_urls,
                         "client_urls": m.client_urls, "is_learner": m.is_learner}
                        for m in self.members],
            "removed": sorted(f"{r:x}" for r in self._removed)}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> "Membership":
        d = json.loads(raw)
        members = [MemberInfo(int(m["id"], 16), m["name"], list(m["peer_urls"]),
                              list(m["client_urls"]), bool(m["is_learner"])) for m in d["members"]]
        return cls(int(d["local_id"], 16), int(d["cluster_id"], 16), members,
                   {int(r, 16) for r in d["removed"]})

    def reload(self, other: "Membership") -> None:
        """Take `other`'s members and removed IDs (a store replaced by a leader's image)."""
        self._members, self._removed = dict(other._members), other._removed

    # -- applying (apply thread) ------------------------------------------------------------------

    def apply_change(self, change: internal_pb2.MemberChange) -> bool:
        """Apply a committed MemberChange. Returns whether anything changed. Changes that no
        longer fit (checked on the leader before proposing) are logged and ignored, the same way
        on every member."""
        MC = internal_pb2.MemberChange
        mid = change.member_id
        members = dict(self._members)
        current = members.get(mid)
        if change.kind == MC.ADD:
            if current is not None or mid in self._removed:
                return self._ignored(change, "member ID exists or was removed")
            members[mid] = MemberInfo(mid, "", list(change.peer_urls), [], change.is_learner)
        elif change.kind == MC.REMOVE:
            if current is None:
                return self._ignored(change, "member not found")
            del members[mid]
            self._removed = self._removed | {mid}
        elif change.kind == MC.UPDATE:
            if current is None:
                return self._ignored(change, "member not found")
            members[mid] = replace(current, peer_urls=list(change.peer_urls))
        elif change.kind == MC.PROMOTE:
            if current is None or not current.is_learner:
                return self._ignored(change, "not a learner")
            members[mid] = replace(current, is_learner=False)
        self._members = members
        log.info("applied membership change", extra={"fields": {
            "kind": MC.Kind.Name(change.kind), "member_id": f"{mid:x}",
            "peer_urls": list(change.peer_urls), "members": len(members)}})
        return True

    @staticmethod
    def _ignored(change, why: str) -> bool:
        log.warning("ignored membership change", extra={"fields": {
            "kind": internal_pb2.MemberChange.Kind.Name(change.kind),
            "member_id": f"{change.member_id:x}", "reason": why}})
        return False

    def apply_published(self, mid: int, name: str, client_urls: list[str]) -> bool:
        """A member published its attributes (an applied log entry). Returns whether they
        changed."""
        member = self._members.get(mid)
        if member is None:
            log.warning("attributes published by an unknown member", extra={"fields": {
                "member_id": f"{mid:x}", "name": name}})
            return False
        if member.name == name and member.client_urls == list(client_urls):
            return False
        self._members = {**self._members, mid: replace(member, name=name, client_urls=list(client_urls))}
        return True

    # -- building -----------------------------------------------------------------------------------

    @classmethod
    def from_flags(cls, name: str, initial_cluster: str, initial_advertise_peer_urls: list[str],
                   advertise_client_urls: list[str], token: str) -> "Membership":
        """The founding membership of a new cluster (--initial-cluster-state new)."""
        configured = parse_initial_cluster(initial_cluster) if initial_cluster else {}
        if name not in configured:
            configured[name] = list(initial_advertise_peer_urls)
        members = [MemberInfo(member_id(urls, token), n, list(urls)) for n, urls in configured.items()]
        local = next(m for m in members if m.name == name)
        members = [replace(m, client_urls=list(advertise_client_urls)) if m is local else m
                   for m in members]
        return cls(local.id, cluster_id([m.id for m in members]), members)

    @classmethod
    def joined(cls, remote_cluster_id: int, remote: list[rpc_pb2.Member], removed: list[int],
               name: str, initial_cluster: str, peer_urls: list[str]) -> "Membership":
        """This member's view when joining a running cluster (--initial-cluster-state existing):
        the remote membership, matched against --initial-cluster as etcd's
        ValidateClusterAndAssignIDs does. Raises ValueError with etcd's reasons."""
        configured = parse_initial_cluster(initial_cluster)
        if len(configured) != len(remote):
            raise ValueError("member count is unequal")
        members = [MemberInfo(m.ID, m.name, list(m.peerURLs), list(m.clientURLs), m.isLearner)
                   for m in remote]
        by_urls = {tuple(sorted(m.peer_urls)): m for m in members}
        for n, urls in configured.items():
            if tuple(sorted(urls)) not in by_urls:
                raise ValueError(f"unmatched member while checking PeerURLs ({sorted(urls)} is not "
                                 f"a peer URL set of any member of the running cluster)")
        local = by_urls.get(tuple(sorted(peer_urls)))
        if local is None:
            raise ValueError(f"this member's peer URLs {sorted(peer_urls)} are not in the running "
                             "cluster's membership: add it first (etcdctl member add)")
        return cls(local.id, remote_cluster_id, members, set(removed))
