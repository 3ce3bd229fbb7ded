"""etcdserverpb.Cluster: MemberList, MemberAdd, MemberRemove, MemberUpdate, MemberPromote, as
etcd 3.4 answers them.

Who does what:
- MemberList answers from this member's applied membership (membership.py), as etcd 3.4 does
  (not linearizable).
- A change is checked and proposed by the leader only: a follower forwards the call over the
  peer transport (`RaftPeer.Member`), gets the leader's answer or its etcd error, then waits
  until it has applied as far as the leader had when it answered (the leader's applied index
  comes with the answer; not a ReadIndex round, which would wait for a new leader when the
  leader just removed itself) and answers with its own header and its own member list. With no
  reachable leader (none elected, or it just removed itself or failed) the call waits for one,
  up to the request timeout, then fails with "etcdserver: request timed out". etcd's followers
  propose themselves and check against their own transport; checking on the leader uses the one
  view of peer liveness that matters.
- On the leader, changes run one at a time (a lock): first a read barrier (everything committed
  is applied, so the membership checked is current), then the strict checks (etcd's
  --strict-reconfig-check, on by default), then the ConfChange proposal (Proposer), awaited until
  applied; the response's member list is the membership after the change.

Strict checks (etcd 3.4 mayAddMember / mayRemoveMember / mayPromoteMember; "started" = has
published its name; "connected" = heard from without a gap for `HEALTH_INTERVAL`, this member
counting itself):
- add: a voter whose addition leaves fewer started voters than a quorum -> "not enough started
  members"; any voter not connected -> "unhealthy cluster";
- remove of a voter: fewer started voters left than a quorum -> "not enough started members";
  the member is active and removing it leaves fewer connected voters than a quorum ->
  "unhealthy cluster" (an inactive member may always be removed);
- promote: the learner's replicated index below 90% of the leader's -> "can only promote a
  learner member which is in sync with leader"; not enough started voters -> "not enough started
  members".
With --strict-reconfig-check=false, as etcd, none of these run except the learner's readiness.
Then etcd's ValidateConfigurationChange: unknown or removed ID -> "member not found" (etcd's
gRPC layer maps ErrIDRemoved to it), existing ID -> "member ID already exist", a peer URL used
by another member -> "Peer URLs already exists", a second learner -> "too many learner members
in cluster", promoting a voter -> "can only promote a learner member".
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable
from urllib.parse import urlsplit

from cluster.raft import ConfChangeType
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from protos.kvpb import internal_pb2, peer_pb2

from . import errors
from .membership import MAX_LEARNERS, Membership, new_member_id
from .proposer import Proposer, ResponseHeaders

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 5.0  # etcd's HealthInterval: peers must have been connected this long
LEARNER_READY_PERCENT = 0.9  # etcd's readyPercent
_LEADER_POLL_SECONDS = 0.1  # how often a change without a reachable leader looks for one
_MC = internal_pb2.MemberChange

_REQUESTS = {
    "MemberAdd": (rpc_pb2.MemberAddRequest, rpc_pb2.MemberAddResponse),
    "MemberRemove": (rpc_pb2.MemberRemoveRequest, rpc_pb2.MemberRemoveResponse),
    "MemberUpdate": (rpc_pb2.MemberUpdateRequest, rpc_pb2.MemberUpdateResponse),
    "MemberPromote": (rpc_pb2.MemberPromoteRequest, rpc_pb2.MemberPromoteResponse),
}


def check_peer_urls(urls) -> list[str]:
    """etcd's types.NewURLs: scheme http(s), host:port, no path; else "given member URLs are
    invalid"."""
    out = []
    for u in urls:
        try:
            parts = urlsplit(u)
            port = parts.port
        except ValueError:
            raise errors.MEMBER_BAD_URLS from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None \
                or parts.path not in ("", "/"):
            raise errors.MEMBER_BAD_URLS
        out.append(u)
    if not out:
        raise errors.MEMBER_BAD_URLS
    return out


def _quorum(n: int) -> int:
    return n // 2 + 1


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    """The Cluster service of one member; also answers the peer transport's `ClusterHandler`."""

    def __init__(self, membership: Membership, headers: ResponseHeaders, log_, proposer: Proposer,
                 *, request_timeout: float, strict_reconfig_check: bool = True,
                 count_promote: Callable[[], None] | None = None):
        self._membership = membership
        self._strict = strict_reconfig_check  # --strict-reconfig-check
        self._count_promote = count_promote  # a learner promoted by this member as leader
        self._headers = headers
        self._log = log_
        self._proposer = proposer
        self._timeout = request_timeout
        self._changing = asyncio.Lock()

    # -- etcdserverpb.Cluster -------------------------------------------------------------------

    async def MemberList(self, request, context):
        resp = rpc_pb2.MemberListResponse(members=self._membership.to_pb())
        self._headers.fill(resp.header, revision=0)  # etcd's carries no revision
        return resp

    async def MemberAdd(self, request, context):
        return await self._serve("MemberAdd", request, context)

    async def MemberRemove(self, request, context):
        return await self._serve("MemberRemove", request, context)

    async def MemberUpdate(self, request, context):
        return await self._serve("MemberUpdate", request, context)

    async def MemberPromote(self, request, context):
        return await self._serve("MemberPromote", request, context)

    async def _serve(self, method: str, request, context):
        try:
            if getattr(self._log, "peers", None) is None:  # the single-member LocalLog
                raise errors.NOT_CAPABLE
            if method in ("MemberAdd", "MemberUpdate"):
                check_peer_urls(request.peerURLs)
            resp = await self._run(method, request)
        except errors.EtcdError as exc:
            await errors.abort_with(context, exc)
        self._headers.fill(resp.header, revision=0)
        return resp

    async def _run(self, method: str, request):
        """On the leader, or forwarded to it. Without a reachable leader (none elected yet, or
        the leader just removed itself or failed), wait for one until the request timeout, as
        an etcd proposal does."""
        deadline = time.monotonic() + self._timeout
        while True:
            leader = self._log.leader_id
            if leader == self._membership.local_id:
                return await self._on_leader(method, request)
            if leader:
                try:
                    return await self._forward(leader, method, request, deadline)
                except ConnectionError:
                    pass
                except errors.EtcdError as exc:
                    if exc.message != errors.NOT_LEADER.message:
                        raise
            if time.monotonic() >= deadline:
                raise errors.TIMEOUT
            await asyncio.sleep(_LEADER_POLL_SECONDS)

    async def _forward(self, leader: int, method: str, request, deadline: float):
        """Have `leader` run the change, then catch up with it and answer from here. Raises
        ConnectionError when the leader cannot be reached."""
        raw, applied_index = await self._log.peers.forward_member_call(
            leader, method, request.SerializeToString(), timeout=max(0.1, deadline - time.monotonic()))
        resp = _REQUESTS[method][1].FromString(raw)
        try:
            await asyncio.wait_for(self._log.wait_applied(applied_index), max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise errors.TIMEOUT from None
        del resp.members[:]
        resp.members.extend(self._membership.to_pb())
        return resp

    # -- peer transport's ClusterHandler --------------------------------------------------------

    async def forwarded(self, method: str, request: bytes) -> tuple[bytes, int]:
        if self._log.leader_id != self._membership.local_id:
            raise errors.NOT_LEADER
        resp = await self._on_leader(method, _REQUESTS[method][0].FromString(request))
        return resp.SerializeToString(), self._log.applied_index

    def cluster_members(self) -> peer_pb2.ClusterMembersResponse:
        m = self._membership
        return peer_pb2.ClusterMembersResponse(cluster_id=m.cluster_id, members=m.to_pb(),
                                               removed=sorted(m.removed))

    # -- the leader's side ------------------------------------------------------------------------

    async def _on_leader(self, method: str, request):
        async with self._changing:
            await self._log.read_barrier()
            m = self._membership
            if method == "MemberAdd":
                urls = list(request.peerURLs)
                self._may_add(request.isLearner)
                mid = new_member_id(urls)
                if m.is_removed(mid):
                    raise errors.MEMBER_NOT_FOUND
                if m.get(mid) is not None:
                    raise errors.MEMBER_EXIST
                if m.peer_url_in_use(urls):
                    raise errors.PEER_URL_EXIST
                if request.isLearner and len(m.learners()) + 1 > MAX_LEARNERS:
                    raise errors.TOO_MANY_LEARNERS
                change = _MC(kind=_MC.ADD, member_id=mid, peer_urls=urls, is_learner=request.isLearner)
                cc = ConfChangeType.ADD_LEARNER_NODE if request.isLearner else ConfChangeType.ADD_NODE
                await self._propose(change, cc)
                added = self._membership.get(mid)
                return rpc_pb2.MemberAddResponse(
                    member=(added.to_pb() if added else rpc_pb2.Member(ID=mid, peerURLs=urls,
                                                                        isLearner=request.isLearner)),
                    members=self._membership.to_pb())
            mid = request.ID
            if method == "MemberRemove":
                self._may_remove(mid)
                self._check_known(mid)
                await self._propose(_MC(kind=_MC.REMOVE, member_id=mid), ConfChangeType.REMOVE_NODE)
                return rpc_pb2.MemberRemoveResponse(members=self._membership.to_pb())
            if method == "MemberUpdate":
                urls = list(request.peerURLs)
                self._check_known(mid)
                if m.peer_url_in_use(urls, except_id=mid):
                    raise errors.PEER_URL_EXIST
                await self._propose(_MC(kind=_MC.UPDATE, member_id=mid, peer_urls=urls),
                                    ConfChangeType.UPDATE_NODE)
                return rpc_pb2.MemberUpdateResponse(members=self._membership.to_pb())
            if method == "MemberPromote":
                self._may_promote(mid)
                self._check_known(mid)
                if not m.get(mid).is_learner:
                    raise errors.MEMBER_NOT_LEARNER
                await self._propose(_MC(kind=_MC.PROMOTE, member_id=mid), ConfChangeType.ADD_NODE)
                if self._count_promote is not None:
                    self._count_promote()
                return rpc_pb2.MemberPromoteResponse(members=self._membership.to_pb())
            raise errors.NOT_CAPABLE

    async def _propose(self, change: internal_pb2.MemberChange, cc_type: ConfChangeType) -> None:
        """Propose; while the core refuses because an earlier conf change is not applied yet
        (a new leader's first moments), retry until the request timeout."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                await self._proposer.propose_member_change(change, cc_type)
                return
            except errors.EtcdError as exc:
                if (exc.message != "etcdserver: leader changed" or time.monotonic() > deadline
                        or self._log.leader_id != self._membership.local_id):
                    raise
            await asyncio.sleep(0.05)

    def _check_known(self, mid: int) -> None:
        if self._membership.get(mid) is None:
            raise errors.MEMBER_NOT_FOUND  # removed IDs too, as etcd's gRPC layer answers

    def _connected_since(self, since: float, mid: int) -> bool:
        if mid == self._membership.local_id:
            return True
        t = self._log.peers.active_since(mid)
        return t is not None and t <= since

    def _started_voters(self, skip: int = 0) -> tuple[int, int]:
        voters = [v for v in self._membership.voters() if v.id != skip]
        return len(voters), sum(1 for v in voters if v.started)

    def _may_add(self, is_learner: bool) -> None:
        if not self._strict:
            return
        if not is_learner:
            n, started = self._started_voters()
            n += 1
            if not (started == 1 and n == 2) and started < _quorum(n):
                raise errors.MEMBER_NOT_ENOUGH_STARTED
        since = time.monotonic() - HEALTH_INTERVAL
        if not all(self._connected_since(since, v.id) for v in self._membership.voters()):
            raise errors.UNHEALTHY

    def _may_remove(self, mid: int) -> None:
        if not self._strict:
            return
        target = self._membership.get(mid)
        if target is not None and target.is_learner:
            return
        n, started = self._started_voters(skip=mid)
        if started < _quorum(n):
            raise errors.MEMBER_NOT_ENOUGH_STARTED
        if mid != self._membership.local_id and self._log.peers.active_since(mid) is None:
            return  # a member that is down is not part of the active quorum
        voters = self._membership.voters()
        since = time.monotonic() - HEALTH_INTERVAL
        active = sum(1 for v in voters if self._connected_since(since, v.id))
        if active - 1 < 1 + (len(voters) - 1) // 2:
            raise errors.UNHEALTHY

    def _may_promote(self, mid: int) -> None:
        match = self._log.match_index(mid)
        if match is not None:
            leader = self._log.match_index(self._membership.local_id) or 0
            if match < leader * LEARNER_READY_PERCENT:
                raise errors.LEARNER_NOT_READY
        if not self._strict:
            return  # as etcd: a learner's readiness is checked in any case
        n, started = self._started_voters()
        if started + 1 < _quorum(n + 1):
            raise errors.MEMBER_NOT_ENOUGH_STARTED
