"""Log compaction and snapshot catch-up: MsgSnap, install via Ready, status reports."""
from __future__ import annotations

from cluster.raft import MessageType, Role

from .harness import SimCluster

MT = MessageType


def lagging_cluster() -> SimCluster:
    """Leader 1; node 3 was down while 1 and 2 compacted past what it has."""
    c = SimCluster(1, (1, 2, 3))
    c.stabilize()
    c.campaign(1)
    c.stabilize()
    c.crash(3)
    for i in range(6):
        c.propose(1, b"p%d" % i)
    c.stabilize()
    assert c.compact(1) and c.compact(2)
    c.restart(3)
    c.stabilize()
    return c


def test_leader_sends_a_snapshot_when_the_next_entry_was_compacted() -> None:
    c = lagging_cluster()
    r = c.raft(1)
    c.tick(1)
    c.tick(1)  # heartbeat: node 3 answers, the leader probes and finds the gap
    c.stabilize()
    assert c.stats["MsgSnap"] == 1 and c.stats["snapshot installed"] == 1
    f = c.raft(3)
    assert f.log.committed == r.log.committed
    assert c.nodes[3].storage.snapshot().metadata.index == r.log.first_index() - 1
    assert f.trk.voters == {1, 2, 3}  # the config comes with the snapshot
    assert r.trk.progress[3].state.name == "REPLICATE"


def test_follower_installs_the_snapshot_through_ready() -> None:
    c = lagging_cluster()
    snap = c.nodes[1].storage.snapshot()
    c.tick(1)
    c.tick(1)
    for _ in range(10):  # heartbeat, response, probe, rejection, then the snapshot
        for i in (1, 2, 3):
            c.handle_ready(i)
        if c.messages(MT.MsgSnap):
            break
        c.deliver_all()
    c.deliver_all(lambda m: m.type == MT.MsgSnap)
    c.ready(3)
    rd = c.nodes[3].pending
    assert rd.snapshot == snap and rd.must_sync
    (ack,) = rd.messages_after_persist  # "installed": only once the snapshot is durable
    assert ack.type == MT.MsgAppResp and ack.index == snap.metadata.index
    c.persist(3)
    assert c.nodes[3].applied == snap.metadata.index


def test_failed_snapshot_is_retried_after_a_heartbeat() -> None:
    c = lagging_cluster()
    c.isolate(3)
    for _ in range(4):
        c.tick(1)
        c.stabilize()
    pr = c.raft(1).trk.progress[3]
    assert pr.state.name != "SNAPSHOT"  # the lost snapshot was reported: back to probing
    c.heal()
    for _ in range(4):
        c.tick(1)
        c.stabilize()
    assert c.raft(3).log.committed == c.raft(1).log.committed


def test_no_snapshot_to_an_inactive_peer() -> None:
    c = SimCluster(1, (1, 2, 3))
    c.stabilize()
    c.campaign(1)
    c.stabilize()
    c.crash(3)
    for i in range(3):
        c.propose(1, b"p%d" % i)
    c.stabilize()
    c.compact(1)
    r = c.raft(1)
    r.trk.progress[3].recent_active = False
    r.trk.progress[3].become_probe()
    assert not r._maybe_send_append(3, True)
    assert r.trk.progress[3].state.name == "PROBE"


def test_snapshot_matching_the_log_only_moves_commit() -> None:
    c = SimCluster(1, (1, 2, 3))
    c.stabilize()
    c.campaign(1)
    c.stabilize()
    c.propose(1, b"x")
    c.stabilize()
    c.compact(1)
    snap = c.nodes[1].storage.snapshot()
    f = c.raft(2)
    assert f.state == Role.FOLLOWER
    assert not f._restore(snap)  # follower 2 has the snapshot's last entry already
    assert f.log.unstable.snapshot is None
