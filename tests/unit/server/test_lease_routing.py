"""LeaseRouter on the leader: a lease it does not know is not answered as unknown while the
leader still has committed entries to apply (the grant may be one of them)."""

from __future__ import annotations

import pytest

from cluster.server.lease_routing import LeaseRouter

ME = 1


class Log:
    leader_id = ME
    committed_index = 10
    applied_index = 9


class Lessor:
    def __init__(self):
        self.known: dict[int, int] = {}

    def renew(self, lease_id: int) -> int:
        return self.known.get(lease_id, 0)

    def time_to_live(self, lease_id: int):
        ttl = self.known.get(lease_id)
        return None if ttl is None else (ttl, ttl)


def test_an_unknown_lease_waits_for_the_leaders_apply_then_is_not_found():
    log, lessor = Log(), Lessor()
    router = LeaseRouter(lessor, log, ME, peers=object())
    with pytest.raises(LookupError):  # the peer's forwarder and _route retry on LookupError
        router.renew_as_leader(7)
    with pytest.raises(LookupError):
        router.time_to_live_as_leader(7)
    lessor.known[7] = 30  # the grant got applied
    assert router.renew_as_leader(7) == (30, 30)
    log.applied_index = log.committed_index
    assert router.renew_as_leader(8) is None and router.time_to_live_as_leader(8) is None
