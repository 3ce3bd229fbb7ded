"""RaftDriver over an in-memory network and real WALs: elections, forwarding, reads, restarts."""

from __future__ import annotations

import asyncio
import time

import pytest

from cluster.raft import HardState, MessageType
from cluster.replication.errors import NO_LEADER
from cluster.replication.raft_wal import MemberWAL

from .memory_network import CLUSTER_ID, AppliedLog, MemoryNetwork, make_driver

VOTERS = [1, 2, 3]


async def until(condition, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.005)


async def start_cluster(tmp_path, network, **kw):
    drivers, logs = {}, {}
    for i in VOTERS:
        drivers[i], logs[i] = make_driver(network, tmp_path, i, VOTERS, **kw), AppliedLog()
    await asyncio.gather(*(drivers[i].start(logs[i], 0) for i in VOTERS))
    await until(lambda: len({d.leader_id for d in drivers.values()}) == 1
                and drivers[1].leader_id != 0, what="one leader")
    return drivers, logs


def test_three_members_apply_the_same_log_whoever_proposes(tmp_path):
    async def main():
        network = MemoryNetwork()
        drivers, logs = await start_cluster(tmp_path, network)
        proposals = [b"%d-%d" % (i, n) for n in range(20) for i in VOTERS]
        for p in proposals:  # followers forward to the leader
            drivers[int(p.split(b"-")[0])].propose(p)
        await until(lambda: all(len(log.data()) == len(proposals) for log in logs.values()),
                    what="every proposal applied everywhere")
        assert logs[1].entries == logs[2].entries == logs[3].entries
        assert sorted(logs[1].data()) == sorted(proposals)
        # The founding conf changes and each leader's empty entry were applied as empty entries.
        assert [i for i, d in logs[1].entries[:3]] == [1, 2, 3]
        for d in drivers.values():
            await d.stop()

    asyncio.run(main())


def test_read_barrier_on_a_follower_sees_every_acknowledged_write(tmp_path):
    async def main():
        network = MemoryNetwork()
        drivers, logs = await start_cluster(tmp_path, network)
        leader = drivers[1].leader_id
        follower = next(i for i in VOTERS if i != leader)
        drivers[leader].propose(b"w")
        await until(lambda: b"w" in logs[leader].data(), what="applied on the leader")
        committed = drivers[leader].committed_index
        await asyncio.gather(*(drivers[follower].read_barrier() for _ in range(20)))
        assert drivers[follower].applied_index >= committed
        assert b"w" in logs[follower].data()
        for d in drivers.values():
            await d.stop()

    asyncio.run(main())


def test_restart_replays_exactly_the_entries_past_the_applied_index(tmp_path):
    async def main():
        network = MemoryNetwork()
        drivers, logs = await start_cluster(tmp_path, network)
        leader = drivers[1].leader_id
        follower = next(i for i in VOTERS if i != leader)
        for n in range(30):
            drivers[leader].propose(b"a%d" % n)
        await until(lambda: len(logs[follower].data()) == 30, what="follower applied 30")
        await drivers[follower].stop()
        for n in range(10):  # the cluster moves on without it
            drivers[leader].propose(b"b%d" % n)
        await until(lambda: len(logs[leader].data()) == 40, what="leader applied 40")

        # The store had applied only part of what the WAL holds (it commits without fsync).
        store_index = logs[follower].entries[10][0]
        replay = AppliedLog(store_index)
        restarted = make_driver(network, tmp_path, follower, VOTERS)
        await restarted.start(replay, store_index)
        expected = [e for e in logs[leader].entries if e[0] > store_index]
        await until(lambda: replay.index >= logs[leader].entries[-1][0], what="caught up")
        assert replay.entries == expected
        drivers[follower] = restarted
        for d in drivers.values():
            await d.stop()

    asyncio.run(main())


def test_a_stopping_leader_hands_over_faster_than_an_election_timeout(tmp_path):
    async def main():
        network = MemoryNetwork()
        drivers, logs = await start_cluster(tmp_path, network, election_ticks=50)  # 0.5 s
        leader = drivers[1].leader_id
        others = [drivers[i] for i in VOTERS if i != leader]
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await drivers[leader].stop()
        await until(lambda: others[0].leader_id == others[1].leader_id not in (0, leader),
                    what="a new leader")
        # Without the hand-over, followers wait at least a full election timeout (0.5 s).
        assert loop.time() - t0 < 0.5
        for d in others:
            await d.stop()

    asyncio.run(main())


def test_without_a_leader_proposals_and_reads_fail_with_no_leader(tmp_path):
    async def main():
        network = MemoryNetwork()
        alone = make_driver(network, tmp_path, 1, VOTERS)  # its peers never start
        await alone.start(AppliedLog(), 0)
        with pytest.raises(type(NO_LEADER)) as exc:
            alone.propose(b"x")
        assert exc.value is NO_LEADER
        with pytest.raises(type(NO_LEADER)):
            await alone.read_barrier()
        await alone.stop()

    asyncio.run(main())


def test_a_lost_commit_index_update_is_recovered_from_the_store(tmp_path):
    """The commit index is not written when it alone changes (nor synced when written with
    entries), so at start the store may have applied past the WAL's. The entries are durable, so
    the member starts normally."""
    async def main():
        network = MemoryNetwork()
        single = make_driver(network, tmp_path, 1, [1])
        applied = AppliedLog()
        await single.start(applied, 0)
        await until(lambda: single.leader_id == 1, what="sole voter leads")
        for n in range(5):
            single.propose(b"e%d" % n)
        await until(lambda: len(applied.data()) == 5, what="applied 5")
        term = single.term
        await single.stop()

        wal = MemberWAL(str(tmp_path / "n1" / "wal"), 1, CLUSTER_ID)
        hard_state, _ = wal.load()
        wal.save(HardState(hard_state.term, hard_state.vote, 2), [], sync=True)  # commit "lost"
        wal.close()

        replay = AppliedLog(applied.index)
        restarted = make_driver(network, tmp_path, 1, [1])
        await restarted.start(replay, applied.index)
        await until(lambda: restarted.leader_id == 1 and restarted.term > term, what="re-elected")
        restarted.propose(b"after")
        await until(lambda: replay.data() == [b"after"], what="new entry applied, nothing twice")
        await restarted.stop()

    asyncio.run(main())


def commit_notices(sent, frm: int, to: int, index: int) -> list[int]:
    """Positions in `sent` of the appends from `frm` to `to` that carry no entries, only a commit
    index of at least `index`."""
    return [k for k, m in enumerate(sent) if m.type == MessageType.MsgApp and m.frm == frm
            and m.to == to and not m.entries and m.commit >= index]


async def recorded_cluster(tmp_path, commit_notice_delay: float):
    """Three drivers that have all applied the leader's first entry; sends recorded from now.

    Heartbeat responses are lost from then on: one makes the leader send an empty append to a
    follower whose ack is outstanding (as etcd's raft does), which would blur what the tests
    look for. The election timeout is 1 s, so the leader stays without them."""
    network = MemoryNetwork()
    drivers, logs = await start_cluster(tmp_path, network, election_ticks=100,
                                        commit_notice_delay=commit_notice_delay)
    leader = drivers[1].leader_id
    await until(lambda: all(d.applied_index == drivers[leader].committed_index
                            for d in drivers.values()), what="everyone applied the leader's entry")
    network.drop_types = {MessageType.MsgHeartbeatResp}
    network.sent = []
    return network, drivers, logs, leader


async def commit_on_leader(lead, data: bytes) -> int:
    """Propose `data` on the leader and wait until it is committed; returns its index."""
    index = lead.committed_index + 1
    lead.propose(data)
    await until(lambda: lead.committed_index >= index, what=f"{data!r} committed")
    return index


def test_a_later_append_carries_the_commit_index_instead_of_a_commit_only_append(tmp_path):
    """One-client writes: the next write's append tells the followers of the previous commit."""
    async def main():
        # y's append must go out within the delay after x commits: 1 s leaves room for a
        # stalled event loop on a loaded machine
        network, drivers, logs, leader = await recorded_cluster(tmp_path, 1.0)
        x = await commit_on_leader(drivers[leader], b"x")
        y = await commit_on_leader(drivers[leader], b"y")
        followers = [i for i in VOTERS if i != leader]
        for f in followers:
            carried = [m for m in network.sent if m.type == MessageType.MsgApp and m.to == f
                       and m.entries and m.entries[0].index == y]
            assert carried and carried[0].commit >= x
        await until(lambda: all(commit_notices(network.sent, leader, f, y) for f in followers),
                    what="y's commit notices sent after the delay")
        for f in followers:  # x's notice was superseded by y's append, never sent
            assert commit_notices(network.sent, leader, f, x) == commit_notices(network.sent, leader, f, y)
        await until(lambda: all(logs[i].data() == [b"x", b"y"] for i in VOTERS), what="applied")
        for d in drivers.values():
            await d.stop()

    asyncio.run(main())


def test_a_commit_only_append_waits_for_the_delay(tmp_path):
    async def main():
        network, drivers, logs, leader = await recorded_cluster(tmp_path, 0.2)
        loop = asyncio.get_running_loop()
        x = await commit_on_leader(drivers[leader], b"x")
        committed_at = loop.time()
        followers = [i for i in VOTERS if i != leader]
        await until(lambda: all(commit_notices(network.sent, leader, f, x) for f in followers),
                    what="the commit notices")
        assert loop.time() - committed_at >= 0.15
        for d in drivers.values():
            await d.stop()

    asyncio.run(main())


def test_a_follower_that_forwarded_a_proposal_hears_of_its_commit_at_once(tmp_path):
    """Its client waits for the follower's own apply: its notice is not held."""
    async def main():
        network, drivers, logs, leader = await recorded_cluster(tmp_path, 30.0)
        proposer, other = [i for i in VOTERS if i != leader]
        drivers[proposer].propose(b"y")
        await until(lambda: b"y" in logs[proposer].data(), what="y applied on its proposer")
        index = next(i for i, d in logs[proposer].entries if d == b"y")
        assert commit_notices(network.sent, leader, proposer, index)
        assert not commit_notices(network.sent, leader, other, index)  # held for 30 s
        for d in drivers.values():
            await d.stop()

    asyncio.run(main())


def test_a_leader_that_sends_heartbeats_late_counts_them(tmp_path):
    """etcd's heartbeat_send_failures: the leader's loop blocked for five heartbeat intervals
    sends its next heartbeat to each follower more than two intervals after the previous one."""
    async def main():
        network = MemoryNetwork()
        late = []
        drivers, _ = await start_cluster(tmp_path, network, count_late_heartbeat=lambda: late.append(1))
        leader = drivers[1].leader_id
        await until(lambda: len(drivers[leader]._heartbeat_sent) == 2, what="heartbeats to both followers")
        before = len(late)
        time.sleep(0.05)  # the whole loop blocked: 5 ticks of 10 ms
        await until(lambda: len(late) >= before + 2, what="a late heartbeat to each follower")
        assert drivers[leader].leader_id == leader
        for d in drivers.values():
            await d.stop()

    asyncio.run(main())


def test_without_pre_vote_or_tick_advance_a_cluster_still_elects(tmp_path):
    """--pre-vote=false and --initial-election-tick-advance=false reach the core and the start."""
    async def main():
        network = MemoryNetwork()
        drivers, logs = await start_cluster(tmp_path, network, pre_vote=False,
                                            initial_election_tick_advance=False)
        assert not any(d._node.raft.pre_vote for d in drivers.values())
        leader = drivers[1].leader_id
        drivers[leader].propose(b"w")
        await until(lambda: all(b"w" in log.data() for log in logs.values()), what="applied everywhere")
        for d in drivers.values():
            await d.stop()

    asyncio.run(main())
