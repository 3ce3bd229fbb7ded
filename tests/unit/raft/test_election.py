"""Elections: randomized timeouts, PreVote, CheckQuorum and the leader lease, durable votes."""
from __future__ import annotations

import random

import pytest

from cluster.raft import (
    Config,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    RequestDropped,
    Role,
)

from .harness import SimCluster

MT = MessageType


def elect(c: SimCluster, node_id: int = 1) -> None:
    c.stabilize()  # apply the bootstrap configuration first
    c.campaign(node_id)
    c.stabilize()
    assert c.raft(node_id).state == Role.LEADER


def test_randomized_election_timeout_spans_et_to_2et() -> None:
    seen = set()
    for seed in range(200):
        raw = RawNode(Config(id=1, storage=MemoryStorage(), rng=random.Random(seed),
                             election_tick=10))
        seen.add(raw.raft.randomized_election_timeout)
    assert seen == set(range(10, 20))


def test_follower_campaigns_after_its_randomized_timeout() -> None:
    c = SimCluster(1, (1, 2, 3), election_tick=10, heartbeat_tick=1)
    c.stabilize()
    r = c.raft(2)
    timeout = r.randomized_election_timeout
    for _ in range(timeout - 1):
        c.tick(2)
    assert r.state == Role.FOLLOWER
    c.tick(2)
    assert r.state == Role.PRE_CANDIDATE
    assert r.term == 1  # a pre-candidate does not bump its term


def test_same_seed_same_timeouts() -> None:
    def timeouts(seed):
        c = SimCluster(seed, (1, 2, 3))
        return [c.raft(i).randomized_election_timeout for i in (1, 2, 3)]

    assert timeouts(5) == timeouts(5)


def test_vote_is_durable_before_the_response_leaves() -> None:
    c = SimCluster(1, (1, 2, 3), pre_vote=False)
    c.stabilize()
    c.campaign(1)
    c.ready(1)
    c.persist(1)
    c.deliver_all()
    c.ready(2)
    rd = c.nodes[2].pending
    assert rd.hard_state.vote == 1 and rd.hard_state.term == 2 and rd.must_sync
    assert not [m for m in rd.messages if m.type == MT.MsgVoteResp]
    assert [m.type for m in rd.messages_after_persist] == [MT.MsgVoteResp]


def test_candidate_counts_its_own_vote_only_once_persisted() -> None:
    c = SimCluster(1, (1,))
    c.stabilize()
    c.campaign(1)
    c.ready(1)
    assert c.raft(1).state == Role.PRE_CANDIDATE
    c.persist(1)  # the pre-vote for itself counts now
    assert c.raft(1).state == Role.CANDIDATE
    c.ready(1)
    assert c.raft(1).state == Role.CANDIDATE
    c.persist(1)  # its vote (term 2) is durable: it wins
    assert c.raft(1).state == Role.LEADER


def test_prevote_keeps_an_isolated_node_from_bumping_terms() -> None:
    c = SimCluster(1, (1, 2, 3))
    elect(c)
    c.isolate(3)
    for _ in range(100):
        c.tick(3)
        c.stabilize()
    assert c.raft(3).term == 2
    c.heal()
    for _ in range(3):
        for i in (1, 2, 3):
            c.tick(i)
        c.stabilize()
    assert c.raft(1).state == Role.LEADER and c.raft(1).term == 2
    assert c.raft(3).lead == 1


def test_check_quorum_leader_steps_down_within_two_election_timeouts() -> None:
    c = SimCluster(1, (1, 2, 3), election_tick=10)
    elect(c)
    c.isolate(1)
    for _ in range(19):
        c.tick(1)
    r = c.raft(1)
    assert r.state == Role.LEADER  # the first check still sees earlier responses
    c.tick(1)
    assert r.state == Role.FOLLOWER and r.term == 2


def test_leader_with_quorum_stays() -> None:
    c = SimCluster(1, (1, 2, 3), election_tick=10)
    elect(c)
    c.isolate(3)
    for _ in range(60):
        c.tick(1)
        c.stabilize()
    assert c.raft(1).state == Role.LEADER


def test_follower_in_lease_ignores_vote_requests() -> None:
    c = SimCluster(1, (1, 2, 3), pre_vote=False, election_tick=10)
    elect(c)
    vote = Message(MT.MsgVote, to=2, frm=3, term=5, index=100, log_term=2)
    c.nodes[2].raw.step(vote)
    assert c.raft(2).term == 2 and not c.nodes[2].raw.has_ready()
    # Out of the lease (no word from the leader for an election timeout), it votes.
    for _ in range(10):
        c.raft(2).election_elapsed += 1
    c.nodes[2].raw.step(vote)
    assert c.raft(2).term == 5 and c.raft(2).vote == 3


def test_transfer_campaign_ignores_the_lease() -> None:
    c = SimCluster(1, (1, 2, 3), election_tick=10)
    elect(c)
    c.transfer_leader(1, 2)
    c.stabilize()
    assert c.raft(2).state == Role.LEADER


def test_vote_refused_to_a_less_up_to_date_log() -> None:
    c = SimCluster(1, (1, 2, 3), pre_vote=False, check_quorum=False)
    elect(c)
    c.propose(1, b"x")
    c.stabilize()
    stale = Message(MT.MsgVote, to=2, frm=3, term=9, index=3, log_term=1)
    c.nodes[2].raw.step(stale)
    c.ready(2)
    (resp,) = c.nodes[2].pending.messages_after_persist
    assert resp.reject and c.raft(2).vote == 0


def test_one_vote_per_term() -> None:
    c = SimCluster(1, (1, 2, 3), pre_vote=False, check_quorum=False)
    c.stabilize()
    raw = c.nodes[3].raw
    raw.step(Message(MT.MsgVote, to=3, frm=1, term=2, index=3, log_term=1))
    raw.step(Message(MT.MsgVote, to=3, frm=2, term=2, index=3, log_term=1))
    c.ready(3)
    grants = [m.to for m in c.nodes[3].pending.messages_after_persist if not m.reject]
    assert grants == [1]


def test_prevote_rejection_at_higher_term_makes_candidate_follow() -> None:
    c = SimCluster(1, (1, 2, 3))
    elect(c)
    r = c.raft(2)
    c.nodes[2].raw.step(
        Message(MT.MsgPreVoteResp, to=2, frm=1, term=7, reject=True)
    )
    assert r.term == 7 and r.state == Role.FOLLOWER


def test_stale_leader_learns_newer_term_from_heartbeat_response() -> None:
    c = SimCluster(1, (1, 2, 3), check_quorum=False)
    elect(c)
    c.isolate(1)
    for _ in range(40):
        for i in (2, 3):
            c.tick(i)
        c.stabilize()
    assert c.raft(1).state == Role.LEADER  # no CheckQuorum: it does not notice
    new_leader = next(i for i in (2, 3) if c.raft(i).state == Role.LEADER)
    c.heal()
    c.tick(1)
    c.tick(1)  # heartbeat_tick is 2
    c.stabilize()
    assert c.raft(1).state == Role.FOLLOWER
    assert c.raft(1).term == c.raft(new_leader).term


def test_no_campaign_with_unapplied_conf_changes() -> None:
    c = SimCluster(1, (1, 2, 3))
    # Before the first Ready, the bootstrap conf changes are committed but not applied.
    c.campaign(1)
    assert c.raft(1).state == Role.FOLLOWER
    c.stabilize()
    c.campaign(1)
    assert c.raft(1).state == Role.PRE_CANDIDATE


def test_proposal_without_leader_is_dropped() -> None:
    c = SimCluster(1, (1, 2, 3))
    c.stabilize()
    with pytest.raises(RequestDropped):
        c.nodes[2].raw.propose(b"x")
    with pytest.raises(RequestDropped):
        c.nodes[2].raw.read_index(b"ctx")
