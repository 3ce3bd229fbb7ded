"""Log replication: early vs after-persist messages, self-ack on fsync, batching, flow control,
forwarding, the commit rule and probing."""
from __future__ import annotations

import pytest

from cluster.raft import Entry, MemoryStorage, MessageType, RequestDropped, Role
from cluster.raft.log import RaftLog
from cluster.raft.progress import Inflights, Progress, ProgressState

from .harness import SimCluster

MT = MessageType


def leader_cluster(voters=(1, 2, 3), **kw) -> SimCluster:
    c = SimCluster(1, voters, **kw)
    c.stabilize()
    c.campaign(1)
    c.stabilize()
    assert c.raft(1).state == Role.LEADER
    return c


def test_leader_sends_appends_before_its_fsync_and_acks_only_after() -> None:
    c = leader_cluster()
    c.propose(1, b"x")
    c.ready(1)
    rd = c.nodes[1].pending
    assert rd.entries and rd.must_sync
    assert {m.type for m in rd.messages} == {MT.MsgApp}  # out before the leader's fsync
    c.deliver_all()
    c.ready(2)
    follower_rd = c.nodes[2].pending
    assert not follower_rd.messages
    assert [m.type for m in follower_rd.messages_after_persist] == [MT.MsgAppResp]


def test_leader_counts_itself_only_after_its_own_fsync() -> None:
    c = leader_cluster()
    r = c.raft(1)
    c.propose(1, b"x")
    index = r.log.last_index()
    c.ready(1)  # appends sent, leader's own write still in progress
    c.deliver_all(lambda m: m.to == 2)
    c.handle_ready(2)
    c.deliver_all(lambda m: m.to == 1)  # follower 2 acks
    assert r.trk.progress[2].match == index
    assert r.log.committed < index  # 1 of 3 durable copies known: no quorum
    c.persist(1)  # the leader's fsync completes: its self-ack makes the quorum
    assert r.trk.progress[1].match == index
    assert r.log.committed == index


def test_five_nodes_commit_with_followers_before_leader_fsync() -> None:
    c = leader_cluster((1, 2, 3, 4, 5))
    r = c.raft(1)
    c.propose(1, b"x")
    index = r.log.last_index()
    c.ready(1)
    c.deliver_all()
    for i in (2, 3, 4):
        c.handle_ready(i)
    c.deliver_all(lambda m: m.to == 1)
    assert r.log.committed == index  # three followers are a quorum without the leader


def test_proposals_between_readies_share_one_append_per_follower() -> None:
    c = leader_cluster()
    for i in range(100):
        c.propose(1, b"p%d" % i)
    c.ready(1)
    apps = [m for m in c.nodes[1].pending.messages if m.type == MT.MsgApp]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(len(m.entries) == 100 for m in apps)


def test_max_size_per_msg_splits_appends() -> None:
    c = leader_cluster(max_size_per_msg=100)
    for i in range(10):
        c.propose(1, b"x" * 40)
    c.ready(1)
    to2 = [m for m in c.nodes[1].pending.messages if m.to == 2]
    # One message per bcast, the rest follows on acks: each MsgApp is within the limit.
    assert len(to2) == 1 and len(to2[0].entries) == 1
    c.persist(1)
    c.stabilize()
    assert c.raft(2).log.last_index() == c.raft(1).log.last_index()


def test_inflight_message_limit_pauses_replication() -> None:
    c = leader_cluster(max_inflight_msgs=2, max_size_per_msg=1)
    r = c.raft(1)
    for i in range(10):
        c.propose(1, b"p%d" % i)
    c.ready(1)
    c.persist(1)
    c.deliver_all(lambda m: m.to == 2 and m.type == MT.MsgApp)
    c.ready(2)
    c.persist(2)
    # Each ack frees one slot; with max_size 1 each MsgApp carries one entry.
    for _ in range(3):
        c.deliver_all(lambda m: m.to == 1)
        c.ready(1)
        c.persist(1)
        in_flight_to_3 = c.messages(MT.MsgApp, to=3)
        assert len(in_flight_to_3) <= 2
        assert r.trk.progress[3].inflights.count() <= 2
        c.deliver_all(lambda m: m.to == 2)
        c.handle_ready(2)
    c.heal()
    c.stabilize()
    assert c.raft(3).log.last_index() == r.log.last_index()


def test_inflights_byte_limit() -> None:
    window = Inflights(max_count=100, max_bytes=1000)
    window.add(5, 600)
    assert not window.full()
    window.add(9, 500)
    assert window.full()
    window.free_le(5)
    assert not window.full() and window.bytes() == 500 and window.count() == 1


def test_progress_probe_replicate_snapshot_states() -> None:
    pr = Progress(next_index=10, inflights=Inflights(4))
    assert pr.state == ProgressState.PROBE and not pr.is_paused()
    pr.sent_entries(12, 3, 30)
    assert pr.is_paused()  # one probe at a time
    assert pr.maybe_update(12) and not pr.is_paused()
    pr.become_replicate()
    assert pr.next == 13
    for last in (15, 18, 21, 24):
        pr.sent_entries(last, 3, 30)
    assert pr.next == 25 and pr.is_paused()  # optimistic pipelining up to the window
    pr.inflights.free_le(18)
    assert not pr.is_paused()
    assert pr.maybe_decr_to(20, 16)  # rejected in replicate: back to match + 1
    assert pr.next == 13
    assert not pr.maybe_decr_to(10, 9)  # stale rejection
    pr.become_snapshot(100)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.next == 101


def test_follower_forwards_proposals_to_the_leader() -> None:
    c = leader_cluster()
    c.propose(2, b"from-follower")
    c.ready(2)
    (fwd,) = c.nodes[2].pending.messages
    assert fwd.type == MT.MsgProp and fwd.to == 1
    c.persist(2)
    c.stabilize()
    assert any(e.data == b"from-follower" for e in c.raft(3).log.entries_from(1))


def test_forwarding_disabled_drops() -> None:
    c = leader_cluster()
    c.raft(2).disable_proposal_forwarding = True
    with pytest.raises(RequestDropped):
        c.nodes[2].raw.propose(b"x")


def test_new_leader_appends_an_empty_entry() -> None:
    c = leader_cluster()
    r = c.raft(1)
    last = r.log.entries_from(r.log.last_index())[0]
    assert last.term == r.term and last.data == b""


def test_old_term_entries_commit_only_through_a_current_term_entry() -> None:
    """Raft §5.4.2 (figure 8): counting replicas commits only entries of the leader's term.
    The full story, with five nodes and crashes, is scenarios/fig8.txt."""
    st = MemoryStorage()
    st.append([Entry(1, 1), Entry(1, 2), Entry(2, 3)])
    log = RaftLog(st)
    assert not log.maybe_commit(3, term=3)  # entry 3 is of term 2: not by counting
    assert log.committed == 0
    log.append([Entry(3, 4)])
    assert log.maybe_commit(4, term=3)  # committing 4 commits 3 with it
    assert log.committed == 4


def test_rejection_hint_skips_a_whole_term() -> None:
    st = MemoryStorage()
    st.append([Entry(t, i) for i, t in enumerate((1, 1, 1, 2, 2, 2, 2), start=1)])
    log = RaftLog(st)
    # A leader whose entry 7 has term 3 probes; the follower hints the last index of a term
    # <= 3 ... and for a leader with term 1 there, it skips all of term 2 at once.
    assert log.find_conflict_by_term(7, 3) == (7, 2)
    assert log.find_conflict_by_term(7, 1) == (3, 1)
    assert log.find_conflict_by_term(7, 0) == (0, 0)
    assert log.find_conflict_by_term(100, 5) == (100, 0)  # beyond the log: no hint
