"""Three members on loopback: one leader, writes through any member, linearizable reads anywhere."""

from __future__ import annotations

import signal
import urllib.request

from protos.etcdserverpb import rpc_pb2


def metric(url: str, name: str) -> float:
    """The sum of `name` over all its label sets, as scraped from /metrics."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))


def test_one_leader_and_every_write_is_read_through_every_member(kv3):
    leader = kv3.wait_leader()
    statuses = {name: c.status() for name, c in kv3.clients.items()}
    leader_id = statuses[leader].header.member_id
    assert {s.leader for s in statuses.values()} == {leader_id}
    assert len({s.header.member_id for s in statuses.values()}) == 3
    assert len({s.header.cluster_id for s in statuses.values()}) == 1

    names = list(kv3.clients)
    for writer in names:  # followers forward their proposals to the leader
        for reader in names:
            key = f"rw/{writer}/{reader}".encode()
            put = kv3.clients[writer].kv.Put(rpc_pb2.PutRequest(key=key, value=key), timeout=5)
            got = kv3.clients[reader].kv.Range(rpc_pb2.RangeRequest(key=key), timeout=5)
            assert [kv.value for kv in got.kvs] == [key], (writer, reader)
            assert got.header.revision >= put.header.revision

    # Linearizable reads on a follower went through ReadIndex rounds, and were counted.
    follower = next(m for m in kv3.spec.members if m.name != leader)
    assert metric(follower.metrics_url, "etcd_server_read_indexes_total") >= 1
    assert metric(follower.metrics_url, "etcd_server_linearizable_reads_total") >= 3
    assert metric(follower.metrics_url, "etcd_server_has_leader") == 1
    assert metric(follower.metrics_url, "etcd_server_is_leader") == 0
    assert metric(follower.metrics_url, "etcd_network_peer_received_bytes_total") > 0
    leader_url = next(m.metrics_url for m in kv3.spec.members if m.name == leader)
    assert metric(leader_url, "etcd_server_is_leader") == 1
    assert metric(leader_url, "etcd_network_peer_sent_bytes_total") > 0
    assert metric(leader_url, "etcd_network_peer_round_trip_time_seconds_count") >= 2


def test_a_leader_stopped_with_sigterm_hands_leadership_over(kv3):
    leader = kv3.wait_leader()
    term = kv3.clients[leader].status().raftTerm
    kv3.procs.kill(f"kv-{leader}", signal.SIGTERM)
    survivors = [n for n in kv3.clients if n != leader]
    new_leader = kv3.wait_leader(survivors)
    assert new_leader != leader
    assert kv3.clients[new_leader].status().raftTerm == term + 1
    handed_over = [line for line in kv3.procs.log_tail(f"kv-{leader}", 200).splitlines()
                   if "leadership handed over on stop" in line]
    assert handed_over and '"done": true' in handed_over[0], kv3.procs.log_tail(f"kv-{leader}")
