"""ReadIndex (safe mode): batching, quorum confirmation, new-leader hold, forwarding."""
from __future__ import annotations

import pytest

from cluster.raft import MessageType, RequestDropped, Role

from .harness import SimCluster

MT = MessageType


def leader_cluster(voters=(1, 2, 3), **kw) -> SimCluster:
    c = SimCluster(1, voters, **kw)
    c.stabilize()
    c.campaign(1)
    c.stabilize()
    assert c.raft(1).state == Role.LEADER
    return c


def served(c: SimCluster) -> list[bytes]:
    return [rs.ctx for _, rs in c.served_reads]


def heartbeats_with_ctx(c: SimCluster) -> list:
    return [m for m in c.inflight if m.type == MT.MsgHeartbeat and m.context]


def test_one_heartbeat_round_confirms_every_read_queued_before_it() -> None:
    c = leader_cluster()
    r = c.raft(1)
    ctxs = [c.read_index(1) for _ in range(5)]
    c.ready(1)
    c.persist(1)
    round1 = heartbeats_with_ctx(c)
    assert sorted(m.to for m in round1) == [2, 3]  # one round: one heartbeat per follower
    assert {m.context for m in round1} == {ctxs[-1]}
    assert r.read_rounds == 1
    # A quorum is the leader plus one follower.
    c.deliver_all(lambda m: m.to == 2)
    c.handle_ready(2)
    c.deliver_all(lambda m: m.to == 1)
    c.ready(1)
    assert served(c) == ctxs  # all five, in order, at the commit index of their arrival
    assert {rs.index for _, rs in c.served_reads} == {r.log.committed}
    assert r.read_rounds == 1


def test_reads_arriving_during_a_round_wait_for_the_next_round() -> None:
    c = leader_cluster()
    r = c.raft(1)
    first = c.read_index(1)
    c.handle_ready(1)
    second = c.read_index(1)  # after the first round was sent
    c.handle_ready(1)
    assert r.read_rounds == 2
    # Acks for the first round release only the first read.
    c.deliver_all(lambda m: m.context == first)
    c.stabilize()
    assert served(c) == [first, second]
    assert r.read_rounds == 2


def test_no_read_without_a_quorum() -> None:
    c = leader_cluster()
    c.isolate(1)
    c.read_index(1)
    c.stabilize()
    for _ in range(4):
        c.tick(1)
        c.stabilize()
    assert served(c) == []


def test_lost_round_is_confirmed_by_a_later_heartbeat() -> None:
    c = leader_cluster()
    ctx = c.read_index(1)
    c.handle_ready(1)
    c.inflight.clear()  # the whole round is lost
    c.tick(1)
    c.tick(1)  # periodic heartbeat carries the newest pending ctx
    c.stabilize()
    assert served(c) == [ctx]


def test_new_leader_holds_reads_until_it_commits_in_its_term() -> None:
    c = leader_cluster(pre_vote=False, check_quorum=False)
    c.campaign(2)
    c.handle_ready(2)
    c.deliver_all()
    c.handle_ready(1)
    c.handle_ready(3)
    c.deliver_all(lambda m: m.type == MT.MsgVoteResp)
    r2 = c.raft(2)
    assert r2.state == Role.LEADER and r2.log.term(r2.log.committed) < r2.term
    ctx = c.read_index(2)
    c.ready(2)
    assert heartbeats_with_ctx(c) == [] and served(c) == []
    assert len(r2.pending_read_index_messages) == 1
    c.persist(2)
    c.stabilize()
    assert served(c) == [ctx]
    (rs,) = [rs for _, rs in c.served_reads]
    assert rs.index == r2.log.committed and r2.log.term(rs.index) == r2.term


def test_follower_read_is_forwarded_and_answered() -> None:
    c = leader_cluster()
    ctx = c.read_index(3)
    c.ready(3)
    (fwd,) = c.nodes[3].pending.messages
    assert fwd.type == MT.MsgReadIndex and fwd.to == 1 and fwd.entries[0].data == ctx
    c.persist(3)
    c.stabilize()
    assert c.served_reads[0][0] == 3 and served(c) == [ctx]
    assert c.served_reads[0][1].index == c.raft(1).log.committed


def test_single_node_answers_without_a_round() -> None:
    c = SimCluster(1, (1,))
    c.stabilize()
    c.campaign(1)
    c.stabilize()
    ctx = c.read_index(1)
    c.ready(1)
    assert served(c) == [ctx] and c.nodes[1].pending.messages == []


def test_read_without_leader_is_dropped() -> None:
    c = SimCluster(1, (1, 2, 3))
    c.stabilize()
    with pytest.raises(RequestDropped):
        c.nodes[1].raw.read_index(b"x")


def test_deposed_leader_that_does_not_know_it_serves_no_read() -> None:
    c = leader_cluster(check_quorum=False)
    c.isolate(1)
    c.campaign(2)
    c.stabilize()
    assert c.raft(2).state == Role.LEADER
    c.propose(2, b"newer")
    c.stabilize()
    assert c.raft(1).state == Role.LEADER  # still believes it leads
    ctx = c.read_index(1)
    for _ in range(6):
        c.tick(1)
        c.stabilize()
    assert ctx not in served(c)  # its heartbeat round never reaches a quorum
