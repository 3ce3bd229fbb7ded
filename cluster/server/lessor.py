"""`Lessor`: the member's in-memory lease table, expiry clock and keepalive renewals.

The store holds the leases durably (id, granted TTL, key attachments); the lessor holds what
only matters while the member runs: when each lease expires. Contract:
- Event-loop only. The apply path tells it about applied grants and revokes (`on_granted`,
  `on_revoked`) after the batch has committed and before the proposers are answered.
- Expiry is detected here but acted on through the seam: every `check_interval` the lessor of
  the leader calls `revoke_expired(lease_id)` (a proposal of LeaseRevoke) for each expired
  lease, and again after `retry_after` seconds if the lease is still there (a lost proposal).
  A member that becomes leader first gives every lease its full TTL (`promote`).
- Only the leader's deadlines count. Keepalives and TTL queries reach this lessor only on the
  leader: a follower forwards them (`LeaseRouter`, lease_routing.py). A follower's lessor keeps
  the leases (for Leases and for the day it leads) but its deadlines are stale until `promote`.
- Renewals are not replicated (as etcd without checkpoints): after a restart every lease starts
  again with its full TTL, or its checkpointed remaining TTL when the store has one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)


def min_lease_ttl(election_timeout_ms: int, heartbeat_interval_ms: int) -> int:
    """etcd's minimum lease TTL in seconds: (3 * election ticks / 2) heartbeats, rounded up."""
    election_ticks = max(1, election_timeout_ms // max(1, heartbeat_interval_ms))
    min_ttl_ms = (3 * election_ticks // 2) * heartbeat_interval_ms
    return max(1, math.ceil(min_ttl_ms / 1000))


@dataclass
class Lease:
    """A granted lease as the lessor tracks it: `ttl` is the granted TTL in seconds."""

    id: int
    ttl: int
    expiry: float              # time.monotonic() deadline
    revoke_proposed_at: float = 0.0

    def remaining(self, now: float) -> float:
        return max(0.0, self.expiry - now)


class Lessor:
    """Lease expiry and renewal for one member (the leader's job in a cluster)."""

    def __init__(self, min_ttl: int, revoke_expired: Callable[[int], None], *,
                 is_leader: Callable[[], bool] = lambda: True,
                 check_interval: float = 0.5, retry_after: float = 3.0,
                 clock: Callable[[], float] = time.monotonic):
        self.min_ttl = min_ttl
        self._revoke_expired = revoke_expired
        self._is_leader = is_leader
        self._check_interval = check_interval
        self._retry_after = retry_after
        self._clock = clock
        self._leases: dict[int, Lease] = {}
        self._task: asyncio.Task | None = None

    def __len__(self) -> int:
        return len(self._leases)

    def recover(self, records) -> None:
        """Load leases from the store at start (`records`: cluster.mvcc LeaseRecord objects)."""
        now = self._clock()
        for r in records:
            ttl = r.remaining_ttl if r.remaining_ttl > 0 else r.ttl
            self._leases[r.id] = Lease(r.id, r.ttl, now + ttl)

    def reset(self, records) -> None:
        """Forget every lease and load `records` (the store was replaced by a leader's image)."""
        self._leases.clear()
        self.recover(records)

    def start(self) -> None:
        self._task = asyncio.create_task(self._expiry_loop(), name="lessor-expiry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # -- called by the apply path -------------------------------------------------------------

    def effective_ttl(self, requested: int) -> int:
        """The TTL a grant gets: raised to the minimum TTL, as etcd's lessor.Grant does."""
        return max(requested, self.min_ttl)

    def on_granted(self, lease_id: int, ttl: int) -> None:
        self._leases[lease_id] = Lease(lease_id, ttl, self._clock() + ttl)

    def on_revoked(self, lease_id: int) -> None:
        self._leases.pop(lease_id, None)

    # -- called by the Lease service ------------------------------------------------------------

    def exists(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def renew(self, lease_id: int) -> int:
        """Keepalive: restart the lease's TTL and return it; 0 for an unknown or expired lease
        (etcd answers a keepalive of such a lease with TTL 0)."""
        lease = self._leases.get(lease_id)
        now = self._clock()
        if lease is None or lease.expiry <= now:
            return 0
        lease.expiry = now + lease.ttl
        return lease.ttl

    def time_to_live(self, lease_id: int) -> tuple[int, int] | None:
        """(remaining seconds, truncated as etcd does; granted TTL), or None if unknown."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return None
        return int(lease.remaining(self._clock())), lease.ttl

    def lease_ids(self) -> list[int]:
        return list(self._leases)

    # -- expiry ---------------------------------------------------------------------------------

    def expired(self) -> list[int]:
        """Leases past their deadline whose revoke is not already in flight (marks them)."""
        now = self._clock()
        due = []
        for lease in self._leases.values():
            if lease.expiry <= now and now - lease.revoke_proposed_at >= self._retry_after:
                lease.revoke_proposed_at = now
                due.append(lease.id)
        return due

    def promote(self) -> None:
        """This member became the leader: every lease gets its full TTL again (etcd's
        lessor.Promote), since renewals seen by the previous leader are not known here."""
        now = self._clock()
        for lease in self._leases.values():
            lease.expiry = now + lease.ttl
            lease.revoke_proposed_at = 0.0

    async def _expiry_loop(self) -> None:
        """Only the leader revokes expired leases; on becoming leader it first promotes."""
        was_leader = False
        while True:
            await asyncio.sleep(self._check_interval)
            leader = self._is_leader()
            if leader and not was_leader:
                self.promote()
            was_leader = leader
            if not leader:
                continue
            for lease_id in self.expired():
                log.info("lease expired", extra={"fields": {"lease_id": lease_id}})
                self._revoke_expired(lease_id)
