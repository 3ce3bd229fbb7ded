"""Log compaction and snapshot catch-up (issue 4), on real `kvcluster` processes.

A 3-member cluster with `--snapshot-count 200`, 64 KiB WAL segments and 100 entries kept behind
each compaction (test knobs, see cluster/replication/factory.py). A follower killed while
2,000 puts commit finds its next entry compacted away on every member, so it must catch up from
the leader's store image; afterwards all three hold the same data, the WALs stay small, and a
kill -9 of every member followed by a restart (snapshot + WAL tail) loses nothing.
"""

from __future__ import annotations

import pathlib
import urllib.request
from concurrent.futures import ThreadPoolExecutor


from cluster.launch import wait_until
from protos.etcdserverpb import rpc_pb2
from tests.support.kvstack import start_kv_cluster

from .cluster_client import ClusterView

PUTS = 2000
VALUE = b"v" * 100


def metric(view: ClusterView, name: str, family: str) -> float:
    """Sum of every sample of `family` in member `name`'s /metrics (-1 while it does not answer:
    a member serves /metrics just after its client port)."""
    m = next(m for m in view.spec.members if m.name == name)
    try:
        text = urllib.request.urlopen(m.metrics_url + "/metrics", timeout=5).read().decode()
    except OSError:
        return -1
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((family + "{", family + " ")))


def put_all(view: ClusterView, name: str, start: int, count: int) -> None:
    kv = view.clients[name].kv
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: kv.Put(rpc_pb2.PutRequest(key=b"k/%05d" % i, value=VALUE), timeout=10),
                      range(start, start + count)))


def snapshot_of(view: ClusterView, name: str) -> list[tuple[bytes, bytes, int]]:
    resp = view.clients[name].kv.Range(
        rpc_pb2.RangeRequest(key=b"k/", range_end=b"k0", serializable=True), timeout=10)
    return [(kv.key, kv.value, kv.mod_revision) for kv in resp.kvs]


def assert_same_everywhere(view: ClusterView, expected_keys: int) -> None:
    revision = view.wait_converged(timeout=60)
    contents = {name: snapshot_of(view, name) for name in view.clients}
    first = next(iter(contents.values()))
    assert len(first) == expected_keys
    assert all(c == first for c in contents.values())
    hashes = {c.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=10).hash
              for c in view.clients.values()}
    assert len(hashes) == 1


def wal_segments(view: ClusterView, name: str) -> list[pathlib.Path]:
    m = next(m for m in view.spec.members if m.name == name)
    return sorted(pathlib.Path(m.data_dir, "member", "wal").glob("*.wal"))


def test_follower_catches_up_from_a_leader_snapshot_and_restarts_recover(small_snapshots):
    view = small_snapshots
    leader = view.wait_leader()
    follower = next(n for n in view.clients if n != leader)
    put_all(view, leader, 0, 100)
    view.wait_converged()
    view.kill(follower)

    put_all(view, leader, 100, PUTS)
    assert "saved snapshot and compacted raft log" in view.procs.log_tail(f"kv-{leader}", 2000)

    view.restart(follower)
    wait_until(lambda: metric(view, follower, "etcd_network_snapshot_receive_success") >= 1,
               60, f"{follower} received a snapshot\n{view.procs.log_tail('kv-' + follower)}")
    assert metric(view, leader, "etcd_network_snapshot_send_success") >= 1
    assert "installed leader snapshot" in view.procs.log_tail(f"kv-{follower}", 2000)
    assert_same_everywhere(view, 100 + PUTS)

    # Compaction bounds the WAL: 2,100 entries of ~170 B would fill 6 segments of 64 KiB.
    for name in view.clients:
        segments = wal_segments(view, name)
        assert len(segments) <= 4, (name, segments)

    # Every member restarts from its newest snapshot plus the WAL tail, and keeps serving.
    for name in list(view.clients):
        view.kill(name)
    start_kv_cluster(view.procs, view.spec)  # together: none serves before a quorum is up
    view.wait_leader(timeout=30)
    assert_same_everywhere(view, 100 + PUTS)
    put_all(view, view.wait_leader(), 100 + PUTS, 50)
    assert_same_everywhere(view, 150 + PUTS)
