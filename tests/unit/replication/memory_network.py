"""Drivers in one event loop, joined by an in-memory network (messages go through the codec)."""

from __future__ import annotations

import asyncio
import random

from cluster.raft.codec import decode_message, encode_message
from cluster.replication.driver import RaftDriver
from cluster.replication.raft_wal import MemberWAL

CLUSTER_ID = 0xC1


class MemoryNetwork:
    """Delivers messages between started drivers on the next loop iteration; `cut(a, b)`
    drops traffic between two members in both directions (reported as unreachable). Set `sent`
    to a list to record what is sent; message types in `drop_types` are silently lost."""

    def __init__(self):
        self.drivers: dict[int, RaftDriver] = {}
        self.cuts: set[frozenset[int]] = set()
        self.sent: list | None = None  # a list: every message sent is appended, in send order
        self.drop_types: set = set()  # message types lost on the way (not reported)

    def endpoint(self, node_id: int) -> "MemoryEndpoint":
        return MemoryEndpoint(self, node_id)

    def deliver(self, frm: int, messages) -> None:
        loop = asyncio.get_running_loop()
        if self.sent is not None:
            self.sent.extend(messages)
        for m in messages:
            if m.type in self.drop_types:
                continue
            target = self.drivers.get(m.to)
            if frozenset((frm, m.to)) in self.cuts or target is None:
                sender = self.drivers.get(frm)
                if sender is not None:
                    sender.report_unreachable(m.to)
                continue
            loop.call_soon(target.step, decode_message(encode_message(m)))


class MemoryEndpoint:
    """One member's PeerNetwork on a MemoryNetwork."""

    def __init__(self, network: MemoryNetwork, node_id: int):
        self.network = network
        self.node_id = node_id

    async def start(self, driver: RaftDriver) -> None:
        self.network.drivers[self.node_id] = driver

    def send(self, messages) -> None:
        if messages:
            self.network.deliver(self.node_id, messages)

    async def stop(self) -> None:
        self.network.drivers.pop(self.node_id, None)


class AppliedLog:
    """An apply callback that records (index, data) and checks order and exactly-once."""

    def __init__(self, applied_index: int = 0):
        self.entries: list[tuple[int, bytes]] = []
        self.index = applied_index

    async def __call__(self, entries) -> None:
        for e in entries:
            assert e.index == self.index + 1, f"applied {e.index} after {self.index}"
            self.index = e.index
            self.entries.append((e.index, e.data))
        await asyncio.sleep(0)

    def data(self) -> list[bytes]:
        return [d for _, d in self.entries if d]


def make_driver(network: MemoryNetwork, tmp_path, node_id: int, voters: list[int],
                election_ticks: int = 10, **kw) -> RaftDriver:
    """A driver ticking every 10 ms, with a real WAL under tmp_path/n<id>/wal."""
    wal = MemberWAL(str(tmp_path / f"n{node_id}" / "wal"), node_id, CLUSTER_ID)
    return RaftDriver(node_id, voters, wal, network.endpoint(node_id), tick_interval=0.01,
                      election_ticks=election_ticks, request_timeout=2.0,
                      rng=random.Random(node_id), **kw)
