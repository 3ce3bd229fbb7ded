"""RaftDriver log compaction and snapshot install, over the in-memory network and real WALs.

The state machine is an `AppliedLog`; its image (`LogImage`, a seam.StoreImage) is the list of
applied entries. The network hands a MsgSnap over as the transport does: the sender's image is
written to the receiver's `received_image_path`, then the MsgSnap is stepped and the sender told
the snapshot was delivered.
"""

from __future__ import annotations

import asyncio
import json
import os
import random

from cluster.raft import MessageType
from cluster.raft.codec import decode_message, encode_message
from cluster.replication.driver import RaftDriver
from cluster.replication.raft_wal import MemberWAL

from .memory_network import CLUSTER_ID, AppliedLog, MemoryNetwork
from .test_driver import VOTERS, until

SEGMENT_BYTES = 4096


class LogImage:
    """seam.StoreImage over an AppliedLog; `durable_index` is what the last sync() covered."""

    def __init__(self, applied: AppliedLog, scratch_dir: str):
        self.applied = applied
        self.scratch_dir = scratch_dir
        os.makedirs(scratch_dir, exist_ok=True)
        self.durable_index = 0
        self.installs = 0

    def sync(self) -> None:
        self.durable_index = self.applied.index

    def write_image(self, dest) -> int:
        raw = json.dumps({"index": self.applied.index,
                          "entries": [[i, d.hex()] for i, d in self.applied.entries]}).encode()
        dest.write(raw)
        return len(raw)

    async def install_image(self, path: str) -> int:
        with open(path, "rb") as f:
            image = json.loads(f.read())
        os.unlink(path)
        self.applied.entries = [(i, bytes.fromhex(d)) for i, d in image["entries"]]
        self.applied.index = image["index"]
        self.installs += 1
        self.durable_index = self.applied.index  # an installed image is durable (fsynced)
        return self.applied.index


class SnapshotNetwork(MemoryNetwork):
    def deliver(self, frm: int, messages) -> None:
        loop = asyncio.get_running_loop()
        rest = []
        for m in messages:
            target = self.drivers.get(m.to)
            if m.type != MessageType.MsgSnap:
                rest.append(m)
                continue
            if target is None or frozenset((frm, m.to)) in self.cuts:
                # as the transport does when the Snapshot call fails
                loop.call_soon(self.drivers[frm].report_snapshot, m.to, True)
                continue
            md = m.snapshot.metadata
            with open(target.received_image_path(md.index, md.term), "wb") as f:
                self.drivers[frm].image.write_image(f)
            loop.call_soon(target.receive_snapshot, decode_message(encode_message(m)))
            loop.call_soon(self.drivers[frm].report_snapshot, m.to, False)
        super().deliver(frm, rest)


def make(network, tmp_path, node_id: int, applied: AppliedLog) -> RaftDriver:
    base = tmp_path / f"n{node_id}"
    wal = MemberWAL(str(base / "wal"), node_id, CLUSTER_ID, segment_size=SEGMENT_BYTES)
    return RaftDriver(node_id, VOTERS, wal, network.endpoint(node_id), tick_interval=0.01,
                      election_ticks=10, request_timeout=2.0, rng=random.Random(node_id),
                      image=LogImage(applied, str(base / "snap")), snapshot_count=20,
                      catch_up_entries=5)


def test_a_cut_off_follower_installs_a_snapshot_and_restarts_replay_exactly_once(tmp_path):
    async def main():
        network = SnapshotNetwork()
        logs = {i: AppliedLog() for i in VOTERS}
        drivers = {i: make(network, tmp_path, i, logs[i]) for i in VOTERS}
        await asyncio.gather(*(drivers[i].start(logs[i], 0) for i in VOTERS))
        await until(lambda: len({d.leader_id for d in drivers.values()}) == 1
                    and drivers[1].leader_id != 0, what="one leader")
        leader = drivers[1].leader_id
        follower = next(i for i in VOTERS if i != leader)
        network.cuts = {frozenset((leader, follower)), frozenset((follower, 6 - leader - follower))}
        for n in range(200):
            drivers[leader].propose(b"x%03d" % n + b"." * 100)
            if n % 20 == 0:
                await asyncio.sleep(0.01)
        await until(lambda: len(logs[leader].data()) == 200, what="leader applied 200")
        await until(lambda: drivers[leader]._snap_index >= 180, what="leader compacted its log")
        wal_dir = tmp_path / f"n{leader}" / "wal"
        # 200 entries of ~130 B fill 7+ segments of 4 KiB; snapshots every 20 release them.
        assert len(list(wal_dir.glob("*.wal"))) <= 4

        network.cuts = set()
        await until(lambda: logs[follower].index >= logs[leader].index, what="follower caught up")
        assert drivers[follower].image.installs == 1
        assert logs[follower].data() == logs[leader].data()
        drivers[leader].propose(b"after")
        await until(lambda: logs[follower].data()[-1:] == [b"after"], what="follower applies on")

        # Restart: from the newest snapshot + WAL tail. The store kept what its last sync made
        # durable (at least the snapshot index); exactly the entries after it are replayed.
        for d in drivers.values():
            await d.stop()
        for i in (leader, follower):
            durable = drivers[i].image.durable_index
            kept = [e for e in logs[i].entries if e[0] <= durable]
            replay = AppliedLog(kept[-1][0])
            replay.entries = list(kept)
            drivers[i] = make(network, tmp_path, i, replay)
            expected, logs[i] = logs[i].entries, replay
        await asyncio.gather(*(drivers[i].start(logs[i], logs[i].index) for i in (leader, follower)))
        await until(lambda: all(logs[i].index >= expected[-1][0] for i in (leader, follower)),
                    what="replayed")
        for i in (leader, follower):
            assert logs[i].entries[:len(expected)] == expected  # AppliedLog checks order/once
        for d in drivers.values():
            if d.leader_id or not d._stopped:
                await d.stop()

    asyncio.run(main())


def test_a_crash_between_the_snapshot_marker_and_the_install_is_finished_at_restart(tmp_path):
    async def main():
        network = SnapshotNetwork()
        logs = {i: AppliedLog() for i in VOTERS}
        drivers = {i: make(network, tmp_path, i, logs[i]) for i in VOTERS}
        await asyncio.gather(*(drivers[i].start(logs[i], 0) for i in VOTERS))
        await until(lambda: len({d.leader_id for d in drivers.values()}) == 1
                    and drivers[1].leader_id != 0, what="one leader")
        leader = drivers[1].leader_id
        follower = next(i for i in VOTERS if i != leader)
        network.cuts = {frozenset((leader, follower)), frozenset((follower, 6 - leader - follower))}
        for n in range(60):
            drivers[leader].propose(b"y%02d" % n)
        await until(lambda: len(logs[leader].data()) == 60, what="leader applied 60")
        await until(lambda: drivers[leader]._snap_index >= 60, what="leader compacted its log")

        # The follower dies after the snapshot file and WAL marker are durable, before the
        # store swap (the image stays where the transport left it).
        crashed = asyncio.get_running_loop().create_future()

        async def crash(path):
            crashed.set_result(path)
            raise RuntimeError("crash before the swap")
        drivers[follower].image.install_image = crash
        network.cuts = set()  # the follower's next entry is gone from the leader's log
        image_path = await asyncio.wait_for(crashed, 5)
        await until(lambda: drivers[follower]._stopped, what="follower failed")
        await drivers[follower].stop()
        assert os.path.exists(image_path)

        before = logs[follower].index
        restarted = make(network, tmp_path, follower, logs[follower])
        await restarted.start(logs[follower], before)
        assert restarted.image.installs == 1 and not os.path.exists(image_path)
        drivers[follower] = restarted
        drivers[leader].propose(b"after")
        await until(lambda: logs[follower].data()[-1:] == [b"after"], what="follower applies on")
        assert logs[follower].data() == logs[leader].data()
        for d in drivers.values():
            await d.stop()

    asyncio.run(main())
