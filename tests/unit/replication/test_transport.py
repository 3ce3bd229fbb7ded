"""PeerTransport over real gRPC on loopback: batching, isolation from dead peers, identity checks."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from cluster.raft import Message, MessageType
from cluster.replication.metrics import ReplicationMetrics
from cluster.replication.transport import MAX_QUEUED_MESSAGES, PeerTransport
from cluster.launch import free_port

CLUSTER = 0xC1


class RecordingDriver:
    """Stands in for RaftDriver: records what the transport delivers and reports."""

    def __init__(self):
        self.stepped: list[Message] = []
        self.unreachable: list[int] = []

    def step(self, m: Message) -> None:
        self.stepped.append(m)

    def report_unreachable(self, peer_id: int) -> None:
        self.unreachable.append(peer_id)


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


async def until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_dead_peer_does_not_delay_a_live_one_and_overflow_is_reported():
    async def main():
        ports = {1: free_port(), 2: free_port(), 3: free_port()}  # member 3 never starts
        peers = {i: url(p) for i, p in ports.items()}
        a, b = RecordingDriver(), RecordingDriver()
        registry = CollectorRegistry()
        ta = PeerTransport(1, CLUSTER, peers, [peers[1]], metrics=ReplicationMetrics(registry))
        tb = PeerTransport(2, CLUSTER, peers, [peers[2]])
        await ta.start(a)
        await tb.start(b)
        try:
            flood = [Message(MessageType.MsgHeartbeat, to=3, frm=1, term=1)] * 5000
            ta.send(flood)  # more than member 3's queue holds
            ta.send([Message(MessageType.MsgApp, to=2, frm=1, term=1, index=n) for n in range(100)])
            await until(lambda: len(b.stepped) == 100)
            assert [m.index for m in b.stepped] == list(range(100))  # in order
            assert 3 in a.unreachable and 2 not in a.unreachable
            # etcd's etcd_network_peer_sent_failures_total{To}: every message that never left.
            failures = lambda to: registry.get_sample_value("etcd_network_peer_sent_failures_total", {"To": to})
            assert failures("3") >= 5000 - MAX_QUEUED_MESSAGES
            await until(lambda: failures("3") == 5000)  # the rest, when the stream to 3 fails
            assert failures("2") == 0  # exported at 0 from the start (etcd: from the first failure)
        finally:
            await ta.stop()
            await tb.stop()

    asyncio.run(main())


def test_a_member_of_another_cluster_is_refused():
    async def main():
        ports = {1: free_port(), 2: free_port()}
        peers = {i: url(p) for i, p in ports.items()}
        a, b = RecordingDriver(), RecordingDriver()
        registry = CollectorRegistry()
        ta = PeerTransport(1, CLUSTER + 1, peers, [peers[1]])  # another cluster id
        tb = PeerTransport(2, CLUSTER, peers, [peers[2]], metrics=ReplicationMetrics(registry))
        await ta.start(a)
        await tb.start(b)
        try:
            ta.send([Message(MessageType.MsgHeartbeat, to=2, frm=1, term=1)])
            await until(lambda: 2 in a.unreachable)  # the stream was refused
            ta.send([Message(MessageType.MsgHeartbeat, to=2, frm=1, term=1)])
            await asyncio.sleep(0.2)
            assert b.stepped == []
            assert registry.get_sample_value("etcd_network_peer_received_failures_total", {"From": "1"}) >= 1
        finally:
            await ta.stop()
            await tb.stop()

    asyncio.run(main())
