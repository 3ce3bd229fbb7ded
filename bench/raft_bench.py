"""Raft core throughput: an in-process 3-node cluster, no network.

Run: ``python -m bench.raft_bench [--proposals N] [--batch B] [--size BYTES]``

Each loop iteration is one round of a driver under load: the leader takes a batch of
proposals, then every node handles its Ready (persist, send, apply, advance) and messages are
handed to their recipients directly. Two storage modes:

- ``memory``: entries go to a ``MemoryStorage`` only (the core's own cost);
- ``wal``: each node also writes its Ready to a real ``WAL`` in a temporary directory and
  fsyncs it (one fsync per Ready that needs it), before its after-persist messages go out.
  The three nodes share one disk and fsync one after another, unlike three machines.

A proposal counts when all three nodes have applied it.
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from dataclasses import dataclass

from cluster.raft import Config, EntryType, MemoryStorage, RawNode
from cluster.raft.codec import decode_conf_change
from cluster.raft.wal import WAL


@dataclass
class Result:
    name: str
    proposals: int
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time: the figure that ignores other load
    readies: int
    fsyncs: int
    fsync_seconds: float

    @property
    def rate(self) -> float:
        return self.proposals / self.seconds

    @property
    def cpu_rate(self) -> float:
        return self.proposals / self.cpu_seconds


class BenchNode:
    """One member: RawNode, its MemoryStorage and optionally a WAL."""

    def __init__(self, node_id: int, voters: list[int], wal_dir: str | None) -> None:
        self.storage = MemoryStorage()
        self.raw = RawNode(Config(id=node_id, storage=self.storage, rng=random.Random(node_id)))
        self.raw.bootstrap(voters)
        self.wal = WAL.create(wal_dir) if wal_dir else None
        self.applied = 0
        self.fsyncs = 0
        self.fsync_seconds = 0.0

    def handle_ready(self, outbox: list) -> bool:
        raw = self.raw
        if not raw.has_ready():
            return False
        rd = raw.ready()
        outbox.extend(rd.messages)
        if self.wal is not None and (rd.entries or rd.hard_state is not None):
            self.wal.save(rd.hard_state, rd.entries)
            if rd.must_sync:
                t = time.perf_counter()
                self.wal.sync()
                self.fsync_seconds += time.perf_counter() - t
                self.fsyncs += 1
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        outbox.extend(rd.messages_after_persist)
        committed = rd.committed_entries
        if committed:
            for e in committed:
                if e.type == EntryType.CONF_CHANGE:
                    raw.apply_conf_change(decode_conf_change(e.data))
            self.applied = committed[-1].index
        raw.advance()
        return True

    def close(self) -> None:
        if self.wal is not None:
            self.wal.close()


def run(
    name: str,
    proposals: int,
    batch: int,
    size: int,
    wal_root: str | None = None,
    per_call: bool = False,
) -> Result:
    voters = [1, 2, 3]
    nodes = {
        i: BenchNode(i, voters, os.path.join(wal_root, f"n{i}") if wal_root else None)
        for i in voters
    }

    def pump() -> int:
        outbox: list = []
        readies = 0
        for node in nodes.values():
            readies += node.handle_ready(outbox)
        for m in outbox:
            nodes[m.to].raw.step(m)
        return readies

    pump()
    nodes[1].raw.campaign()
    for _ in range(10):
        pump()
    leader = nodes[1]
    base = leader.applied
    payloads = [os.urandom(size) for _ in range(1024)]
    chunk = [payloads[i % len(payloads)] for i in range(batch)]
    readies = 0
    for n in nodes.values():
        n.fsyncs, n.fsync_seconds = 0, 0.0
    target = base + proposals
    proposed = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    while min(n.applied for n in nodes.values()) < target:
        if proposed < proposals:
            k = min(batch, proposals - proposed)
            if per_call:
                propose = leader.raw.propose
                for data in chunk[:k]:
                    propose(data)
            else:
                leader.raw.propose_batch(chunk[:k])
            proposed += k
        readies += pump()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    for n in nodes.values():
        n.close()
    return Result(
        name, proposals, seconds, cpu_seconds, readies,
        sum(n.fsyncs for n in nodes.values()),
        sum(n.fsync_seconds for n in nodes.values()),
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proposals", type=int, default=200_000)
    p.add_argument("--wal-proposals", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--dir", default=None, help="parent directory of the WAL temp dirs")
    args = p.parse_args(argv)

    results = [
        run("memory, propose_batch()", args.proposals, args.batch, args.size),
        run("memory, propose() x batch", args.proposals, args.batch, args.size, per_call=True),
    ]
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        results.append(
            run("WAL+fsync, propose_batch()", args.wal_proposals, args.batch, args.size,
                wal_root=os.path.join(d, "a"))
        )
        results.append(
            run("WAL+fsync, batch 100", args.wal_proposals // 4, 100, args.size,
                wal_root=os.path.join(d, "b"))
        )
    print(f"3 nodes in one process, {args.size} B proposals, applied on all 3 nodes\n")
    print(f"{'configuration':28} {'proposals':>9} {'seconds':>8} {'proposals/s':>12} "
          f"{'per CPU-s':>10} {'readies':>8} {'fsyncs':>7} {'avg fsync':>10}")
    for r in results:
        avg = f"{r.fsync_seconds / r.fsyncs * 1000:.2f} ms" if r.fsyncs else "-"
        print(f"{r.name:28} {r.proposals:>9} {r.seconds:>8.2f} {r.rate:>12,.0f} "
              f"{r.cpu_rate:>10,.0f} {r.readies:>8} {r.fsyncs:>7} {avg:>10}")
    print("\nproposals/s is wall clock; per CPU-s divides by this process's CPU time (it "
          "excludes other load\non the machine, and fsync waits).")


if __name__ == "__main__":
    main()
