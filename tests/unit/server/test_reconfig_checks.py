"""ClusterService's strict reconfiguration checks (etcd 3.4's mayAddMember, mayRemoveMember,
mayPromoteMember) against a scripted view of peer activity and replication progress."""

from __future__ import annotations

import time

import pytest

from cluster.server import errors
from cluster.server.cluster_service import ClusterService, check_peer_urls
from cluster.server.membership import Membership
from protos.kvpb import internal_pb2

MC = internal_pb2.MemberChange
URLS = {n: f"http://127.0.0.1:{p}" for n, p in (("a", 1), ("b", 2), ("c", 3))}


class FakePeers:
    def __init__(self, since: dict[int, float | None]):
        self.since = since

    def active_since(self, peer_id):
        return self.since.get(peer_id)


class FakeLog:
    def __init__(self, peers, match):
        self.peers, self._match = peers, match

    def match_index(self, mid):
        return self._match.get(mid)


def service(down=(), match=None, strict=True):
    m = Membership.from_flags("a", ",".join(f"{n}={u}" for n, u in URLS.items()), [URLS["a"]], [], "t")
    long_ago = time.monotonic() - 60
    peers = FakePeers({x.id: (None if x.name in down else long_ago) for x in m.members})
    return ClusterService(m, None, FakeLog(peers, match or {}), None, request_timeout=1,
                          strict_reconfig_check=strict), m


def ids(m):
    return {x.name: x.id for x in m.members}


def test_add_needs_every_voter_connected_and_enough_started():
    svc, m = service()
    svc._may_add(is_learner=False)
    m.apply_change(MC(kind=MC.ADD, member_id=10, peer_urls=["http://127.0.0.1:10"]))  # unstarted
    svc._log.peers.since[10] = time.monotonic() - 60
    svc._may_add(is_learner=False)  # 5 voters, 3 started: quorum 3
    m.apply_change(MC(kind=MC.ADD, member_id=11, peer_urls=["http://127.0.0.1:11"]))
    svc._log.peers.since[11] = time.monotonic() - 60
    with pytest.raises(errors.EtcdError) as exc:  # 6 voters, 3 started: quorum 4
        svc._may_add(is_learner=False)
    assert exc.value is errors.MEMBER_NOT_ENOUGH_STARTED
    svc._may_add(is_learner=True)  # a learner does not change the quorum

    svc, m = service(down=("b",))
    for learner in (False, True):
        with pytest.raises(errors.EtcdError) as exc:
            svc._may_add(is_learner=learner)
        assert exc.value is errors.UNHEALTHY


def test_remove_protects_the_active_quorum_but_a_down_member_may_go():
    svc, m = service(down=("b",))
    with pytest.raises(errors.EtcdError) as exc:
        svc._may_remove(ids(m)["c"])
    assert exc.value is errors.UNHEALTHY
    svc._may_remove(ids(m)["b"])

    svc, m = service()
    for i in (10, 11):  # two unstarted voters: removing a started one leaves too few started
        m.apply_change(MC(kind=MC.ADD, member_id=i, peer_urls=[f"http://127.0.0.1:{i}"]))
    with pytest.raises(errors.EtcdError) as exc:
        svc._may_remove(ids(m)["c"])
    assert exc.value is errors.MEMBER_NOT_ENOUGH_STARTED


def assert_promotes_only_a_learner_in_sync(svc, m):
    m.apply_change(MC(kind=MC.ADD, member_id=10, peer_urls=["http://127.0.0.1:10"], is_learner=True))
    svc._log._match = {m.local_id: 100, 10: 89}
    with pytest.raises(errors.EtcdError) as exc:
        svc._may_promote(10)
    assert exc.value is errors.LEARNER_NOT_READY
    svc._log._match[10] = 90
    svc._may_promote(10)


def test_promote_needs_a_learner_in_sync():
    assert_promotes_only_a_learner_in_sync(*service(match={}))


def test_without_strict_reconfig_check_only_the_learners_readiness_is_checked():
    svc, m = service(down=("b", "c"), strict=False)  # what every check above refuses
    svc._may_add(is_learner=False)
    svc._may_remove(ids(m)["a"])
    assert_promotes_only_a_learner_in_sync(svc, m)


def test_peer_urls_are_checked_as_etcd_does():
    assert check_peer_urls(["http://127.0.0.1:2380", "https://h:1"])
    for bad in ([], ["http://127.0.0.1"], ["127.0.0.1:2380"], ["http://h:1/path"], ["unix://x"]):
        with pytest.raises(errors.EtcdError) as exc:
            check_peer_urls(bad)
        assert exc.value is errors.MEMBER_BAD_URLS
