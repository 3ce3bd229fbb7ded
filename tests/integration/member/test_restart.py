"""Durability: kill -9 right after acknowledged writes, restart, and find each write applied once."""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from cluster.server.local_log import LocalLog
from cluster.server.log_segments import encode_record, read_records, segment_name
from cluster.server.seam import Entry
from protos.etcdserverpb import rpc_pb2
from cluster.launch import ClusterSpec

from .conftest import start_member


@pytest.mark.parametrize("flags", [[], ["--experimental-local-log"]], ids=["raft", "local-log"])
def test_kill9_after_acknowledged_writes_then_restart(procs, tmp_path, flags):
    spec = ClusterSpec.allocate(str(tmp_path), 1, extra_flags=flags)
    m = start_member(procs, spec)
    lease = m.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=300)).ID
    m.put(b"leased", b"v", lease=lease)

    def write(i: int) -> tuple[bytes, int]:
        key = b"k%03d" % (i % 50)
        return key, m.put(key, b"%d" % i).header.revision

    with ThreadPoolExecutor(8) as pool:  # concurrent writers: several proposals per fsync batch
        acked = list(pool.map(write, range(400)))
    counter_revs = [m.put(b"counter", b"%d" % i).header.revision for i in range(20)]
    last_rev = counter_revs[-1]
    procs.kill(f"kv-{spec.members[0].name}", signal.SIGKILL)
    m.channel.close()

    m = start_member(procs, spec)
    try:
        # every acknowledged write is there, with the value of the latest acknowledged write
        latest: dict[bytes, int] = {}
        for key, rev in acked:
            latest[key] = max(latest.get(key, 0), rev)
        for key, rev in latest.items():
            kv = m.get(key).kvs[0]
            assert kv.mod_revision == rev
        # applied exactly once: no revision lost or repeated, versions count the puts
        assert m.get(b"counter").header.revision == last_rev
        counter = m.get(b"counter").kvs[0]
        assert (counter.version, counter.value, counter.mod_revision) == (20, b"19", last_rev)
        assert sorted(rev for _, rev in acked) == sorted(set(rev for _, rev in acked))
        assert sum(m.get(k).kvs[0].version for k in latest) == 400
        # a lease survives, with its full TTL again (as etcd without checkpoints)
        ttl = m.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease, keys=True))
        assert ttl.grantedTTL == 300 and ttl.TTL > 290 and list(ttl.keys) == [b"leased"]
        # and the member keeps going from there
        assert m.put(b"after", b"x").header.revision == last_rev + 1
        st = m.maintenance.Status(rpc_pb2.StatusRequest())
        assert st.raftAppliedIndex == st.raftIndex
    finally:
        m.channel.close()


def test_local_log_truncates_torn_tail_and_replays_past_applied_index(tmp_path):
    wal = str(tmp_path / "wal")
    os.makedirs(wal)
    path = os.path.join(wal, segment_name(1))
    with open(path, "wb") as f:
        for i in range(1, 6):
            f.write(encode_record(Entry(i, 1, b"entry-%d" % i)))
        f.write(encode_record(Entry(6, 1, b"torn"))[:-2])  # a crash in the middle of a write

    applied: list[Entry] = []

    async def run() -> None:
        async def apply(entries):
            applied.extend(entries)

        log = LocalLog(wal, member_id=1)
        await log.start(apply, applied_index=3)  # the store already has 1..3
        # 4 and 5 replayed; then the new term's empty entry (6) is written and applied
        assert [(e.index, e.term, e.data) for e in applied] == [
            (4, 1, b"entry-4"), (5, 1, b"entry-5"), (6, 2, b"")]
        assert log.committed_index == log.applied_index == 6 and log.term == 2
        log.propose(b"seven")
        log.propose(b"eight")
        while log.applied_index < 8:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(log.read_barrier(), 5)
        await log.stop()

    asyncio.run(run())
    assert [(e.index, e.term, e.data) for e in applied[3:]] == [(7, 2, b"seven"), (8, 2, b"eight")]
    entries, end = read_records(path)
    assert [e.index for e in entries] == [1, 2, 3, 4, 5, 6, 7, 8] and end == os.path.getsize(path)


def test_local_log_rotates_segments_and_purges_what_the_store_made_durable(tmp_path):
    wal = str(tmp_path / "wal")
    durable_calls = []

    async def run(applied_index: int, proposals: int) -> list[Entry]:
        seen: list[Entry] = []

        async def apply(entries):
            seen.extend(entries)

        log = LocalLog(wal, member_id=1, segment_bytes=300,
                       make_applied_durable=lambda: durable_calls.append(True))
        await log.start(apply, applied_index=applied_index)
        for i in range(proposals):
            target = log.applied_index + 1
            log.propose(b"x" * 50)
            while log.applied_index < target:  # one entry per batch: many segments
                await asyncio.sleep(0.005)
        await log.stop()
        return seen

    first = asyncio.run(run(0, 30))
    assert [e.index for e in first] == list(range(1, 32))
    segments = sorted(os.listdir(wal))
    assert durable_calls and 1 <= len(segments) <= 3  # the applied prefix was deleted
    oldest = int(segments[0][:-4], 16)
    assert oldest > 1
    # restart as a store that applied everything: nothing to replay, the log continues
    second = asyncio.run(run(31, 1))
    assert [(e.index, e.data) for e in second] == [(32, b""), (33, b"x" * 50)]
    # restart as a store that lost its last entries: those are still in the log
    third = asyncio.run(run(oldest, 0))
    assert [e.index for e in third][:2] == [oldest + 1, oldest + 2] and third[-1].data == b""


def test_sigterm_stops_cleanly_and_restart_keeps_data(procs, tmp_path):
    spec = ClusterSpec.allocate(str(tmp_path), 1)
    m = start_member(procs, spec)
    rev = m.put(b"graceful", b"1").header.revision
    name = f"kv-{spec.members[0].name}"
    proc = procs.procs[name]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, procs.log_tail(name)
    m.channel.close()
    m = start_member(procs, spec)
    try:
        kv = m.get(b"graceful").kvs[0]
        assert (kv.value, kv.mod_revision) == (b"1", rev)
    finally:
        m.channel.close()
