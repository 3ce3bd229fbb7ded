"""RaftDriver membership changes over the in-memory network: a conf change's context reaches
every member's apply callback once, in log order; a member started empty (no bootstrap, as one
joining with --initial-cluster-state existing) learns the configuration from the leader, and a
promoted learner votes."""

from __future__ import annotations

import asyncio

from cluster.raft import ConfChange, ConfChangeType

from .memory_network import AppliedLog, MemoryNetwork, make_driver
from .test_driver import VOTERS, start_cluster, until


def test_a_joining_member_is_added_as_learner_promoted_and_applies_the_same_log(tmp_path):
    async def main():
        network = MemoryNetwork()
        drivers, logs = await start_cluster(tmp_path, network)
        leader = drivers[1].leader_id
        drivers[leader].propose(b"before")
        drivers[leader].propose_conf_change(_cc(ConfChangeType.ADD_LEARNER_NODE, 4, b"add-4"))
        await until(lambda: all(b"add-4" in log.data() for log in logs.values()), what="add applied")

        joining = make_driver(network, tmp_path, 4, [])  # no bootstrap: learns from the leader
        logs[4] = AppliedLog()
        await joining.start(logs[4], 0)
        drivers[4] = joining
        await until(lambda: b"add-4" in logs[4].data(), what="the learner caught up")
        assert not joining.is_voter(4)
        await until(lambda: (drivers[leader].match_index(4) or 0) >= drivers[leader].committed_index,
                    what="the leader sees the learner in sync")
        drivers[leader].propose_conf_change(_cc(ConfChangeType.ADD_NODE, 4, b"promote-4"))
        drivers[leader].propose(b"after")
        await until(lambda: all(b"after" in log.data() for log in logs.values()), what="all applied")
        assert all(d.is_voter(4) for d in drivers.values())
        # Same entries, same order, everywhere; the bootstrap entries stay empty.
        assert logs[1].entries == logs[2].entries == logs[3].entries == logs[4].entries
        assert [d for _, d in logs[1].entries[:3]] == [b"", b"", b""]
        for d in drivers.values():
            await d.stop()

    asyncio.run(main())


def test_a_removed_member_is_out_of_every_configuration(tmp_path):
    async def main():
        network = MemoryNetwork()
        drivers, logs = await start_cluster(tmp_path, network)
        leader = drivers[1].leader_id
        victim = next(i for i in VOTERS if i != leader)
        drivers[leader].propose_conf_change(_cc(ConfChangeType.REMOVE_NODE, victim, b"remove"))
        await until(lambda: b"remove" in logs[leader].data(), what="remove applied on the leader")
        assert not drivers[leader].is_voter(victim)
        drivers[leader].propose(b"two-member write")  # a quorum of the two left commits it
        rest = [i for i in VOTERS if i != victim]
        await until(lambda: all(b"two-member write" in logs[i].data() for i in rest), what="commit")
        for d in drivers.values():
            await d.stop()

    asyncio.run(main())


def _cc(kind, node_id, context):
    return ConfChange(kind, node_id, context)
