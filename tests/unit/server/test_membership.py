"""Membership: etcd's IDs, applying changes (copy on write, invalid ones ignored), the store
record's round trip, and matching a joining member against the running cluster."""

from __future__ import annotations

import pytest

from cluster.server.membership import Membership, member_id
from protos.etcdserverpb import rpc_pb2
from protos.kvpb import internal_pb2

MC = internal_pb2.MemberChange
A, B, C = "http://127.0.0.1:2380", "http://127.0.0.1:2480", "http://127.0.0.1:2580"


def founding() -> Membership:
    return Membership.from_flags("a", f"a={A},b={B}", [A], ["http://127.0.0.1:2379"], "tok")


def test_ids_are_etcds():
    m = founding()
    assert m.local_id == member_id([A], "tok")
    assert {x.name for x in m.members} == {"a", "b"}
    # etcd's v3rpc MemberAdd: sorted peer URLs + "" + Unix seconds
    assert member_id([C], "", 1700000000) == member_id([C], "1700000000")
    assert member_id([C], "", 1700000000) != member_id([C], "", 1700000001)


def test_changes_apply_and_invalid_ones_are_ignored():
    m = founding()
    before = m.members
    assert m.apply_change(MC(kind=MC.ADD, member_id=7, peer_urls=[C], is_learner=True))
    assert before != m.members and m.get(7).is_learner and not m.get(7).started
    assert not m.apply_change(MC(kind=MC.ADD, member_id=7, peer_urls=[C]))  # exists
    assert m.apply_change(MC(kind=MC.PROMOTE, member_id=7))
    assert not m.get(7).is_learner
    assert not m.apply_change(MC(kind=MC.PROMOTE, member_id=7))  # not a learner any more
    assert m.apply_change(MC(kind=MC.UPDATE, member_id=7, peer_urls=["http://127.0.0.1:9"]))
    assert m.apply_published(7, "c", ["http://127.0.0.1:8"]) and m.get(7).started
    assert m.apply_change(MC(kind=MC.REMOVE, member_id=7))
    assert m.get(7) is None and m.is_removed(7)
    assert not m.apply_change(MC(kind=MC.ADD, member_id=7, peer_urls=[C]))  # removed for good
    assert not m.apply_change(MC(kind=MC.REMOVE, member_id=7))


def test_the_store_record_round_trips():
    m = founding()
    m.apply_change(MC(kind=MC.ADD, member_id=7, peer_urls=[C], is_learner=True))
    m.apply_change(MC(kind=MC.REMOVE, member_id=member_id([B], "tok")))
    back = Membership.decode(m.encode())
    assert (back.local_id, back.cluster_id, back.members, back.removed) == \
        (m.local_id, m.cluster_id, m.members, m.removed)


def test_a_joining_member_is_found_by_its_peer_urls():
    remote = [rpc_pb2.Member(ID=1, name="a", peerURLs=[A]), rpc_pb2.Member(ID=9, peerURLs=[C], isLearner=True)]
    joined = Membership.joined(42, remote, [5], "c", f"a={A},c={C}", [C])
    assert (joined.local_id, joined.cluster_id, joined.is_removed(5)) == (9, 42, True)
    with pytest.raises(ValueError, match="member count is unequal"):
        Membership.joined(42, remote, [], "c", f"c={C}", [C])
    with pytest.raises(ValueError, match="unmatched member"):
        Membership.joined(42, remote, [], "c", f"a={B},c={C}", [C])
