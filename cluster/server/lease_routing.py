"""`LeaseRouter`: keepalives and TTL queries go to the leader's lessor, wherever they arrive.

Only the leader's lessor keeps lease deadlines that matter (it alone proposes LeaseRevoke for
expired leases, and restarts every lease at its full TTL when it becomes leader: `Lessor.promote`).
So, as etcd's `EtcdServer.LeaseRenew` / `LeaseTimeToLive` do:
- on the leader, a keepalive renews the local lessor and a TTL query reads it;
- on a follower, both are forwarded to the leader over the peer transport
  (`RaftPeer.LeaseRenew` / `RaftPeer.LeaseTimeToLive` on its peer URL, the way etcd uses its peer
  HTTP `/leases` and `/leases/internal`); the follower answers its client with the leader's TTL;
- a callee that is no longer the leader refuses ("not leader"), an unreachable leader fails the
  call (each attempt is bounded by `attempt_timeout`, so a leader cut off by a partition does
  not hold the call): the router then retries with whoever leads next, every `retry_interval`, until
  `timeout` (etcd's request timeout). Then it fails with "etcdserver: no leader" when there was
  no leader at the end, "etcdserver: request timed out" otherwise.
- A lease the leader does not know while it has committed entries left to apply is not answered
  as unknown (TTL 0, which ends a client's session) but retried: its grant may be among them
  (etcd's leader waits for its applied index before a renewal).
- With a log that has no peers (`LocalLog`, one member), everything is local.

The router is also the `LeasePrimary` the peer service answers forwarded calls with: its
`*_as_leader` methods raise `LookupError` on a member that is not the leader.
"""

from __future__ import annotations

import asyncio
import logging

from cluster.replication.errors import NO_LEADER

from . import errors
from .lessor import Lessor

log = logging.getLogger(__name__)

LeaseAnswer = tuple[int, int] | None  # (ttl, granted ttl), None: no such lease


class LeaseRouter:
    """Sends lease renewals and TTL queries to the leader's lessor (see the module docstring)."""

    def __init__(self, lessor: Lessor, replicated_log, member_id: int, *, peers=None, timeout: float = 7.0,
                 retry_interval: float = 0.05, attempt_timeout: float = 2.0):
        """`replicated_log`: the ReplicatedLog (for `leader_id`); `peers`: the transport with
        `forward_lease(leader_id, lease_id, renew=, timeout=)`, or None (single member)."""
        self._lessor = lessor
        self._log = replicated_log
        self._member_id = member_id
        self._peers = peers
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._attempt_timeout = attempt_timeout  # one forwarded call; a blackholed leader

    def _is_leader(self) -> bool:
        return self._peers is None or self._log.leader_id == self._member_id

    # -- LeasePrimary (peer calls, and local calls on the leader) ---------------------------------

    def renew_as_leader(self, lease_id: int) -> LeaseAnswer:
        if not self._is_leader():
            raise LookupError("not leader")
        ttl = self._lessor.renew(lease_id)
        if not ttl:
            self._unknown_lease_yet()
        return (ttl, ttl) if ttl else None

    def time_to_live_as_leader(self, lease_id: int) -> LeaseAnswer:
        if not self._is_leader():
            raise LookupError("not leader")
        answer = self._lessor.time_to_live(lease_id)
        if answer is None:
            self._unknown_lease_yet()
        return answer

    def _unknown_lease_yet(self) -> None:
        """A lease this leader does not know may be granted by an entry committed but not yet
        applied here (the follower that proposed it applied it first): as etcd's leader waits
        for its applied index before renewing, refuse for now, and the caller retries. Only a
        lease unknown with everything committed applied is answered as not found (TTL 0)."""
        if self._peers is not None and self._log.applied_index < self._log.committed_index:
            raise LookupError("lease grant not applied yet on the leader")

    # -- the Lease service's calls --------------------------------------------------------------

    async def renew(self, lease_id: int) -> int:
        """Keepalive: the TTL the leader renewed the lease to; 0 for an unknown or expired lease."""
        answer = await self._route(lease_id, renew=True)
        return answer[0] if answer else 0

    async def time_to_live(self, lease_id: int) -> LeaseAnswer:
        """(remaining seconds, granted TTL) as the leader's lessor has them; None if unknown."""
        return await self._route(lease_id, renew=False)

    async def _route(self, lease_id: int, *, renew: bool) -> LeaseAnswer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            lead = self._log.leader_id
            if self._peers is None or lead == self._member_id:
                try:
                    return self.renew_as_leader(lease_id) if renew else self.time_to_live_as_leader(lease_id)
                except LookupError:  # lost leadership just now: go round again
                    pass
            elif lead:
                try:
                    return await self._peers.forward_lease(
                        lead, lease_id, renew=renew,
                        timeout=max(0.05, min(self._attempt_timeout, deadline - loop.time())))
                except (LookupError, ConnectionError) as exc:
                    log.debug("lease call not answered by the leader", extra={"fields": {
                        "leader": f"{lead:x}", "lease_id": lease_id, "error": str(exc)}})
            if loop.time() >= deadline:
                raise NO_LEADER if not self._log.leader_id else errors.TIMEOUT
            await asyncio.sleep(self._retry_interval)
