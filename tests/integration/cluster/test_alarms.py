"""The NOSPACE alarm on 3 members: raised by the quota through Raft (every member lists it and
refuses puts), kept across a kill -9, and carried to a follower that catches up from a leader's
snapshot (the alarm entry itself was compacted away); compaction + defrag + disarm, then writes
work everywhere again."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from cluster.launch import wait_until
from protos.etcdserverpb import rpc_pb2
from tests.support.kvstack import start_kv_cluster

from .cluster_client import ClusterView, running_view
from .test_snapshot_catchup import metric

QUOTA = 2 * 1024 * 1024
NOSPACE = "etcdserver: mvcc: database space exceeded"


@pytest.fixture
def quota3(procs, tmp_path) -> ClusterView:
    yield from running_view(procs, tmp_path, "--quota-backend-bytes", str(QUOTA), "--snapshot-count", "200",
                            "--experimental-snapshot-catchup-entries", "50")


def alarms(view: ClusterView, name: str) -> list[tuple[int, int]]:
    resp = view.clients[name].maintenance.Alarm(
        rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=10)
    return [(a.memberID, a.alarm) for a in resp.alarms]


def settled_alarms(view: ClusterView) -> list[tuple[int, int]]:
    """The alarm list once every member lists the same non-empty one, and no member still has a
    NOSPACE proposal of its own to make (each has applied an alarm entry: all lists agree)."""
    seen: list = []

    def agreed() -> bool:
        lists = [sorted(alarms(view, n)) for n in view.clients]
        seen[:] = lists[0]
        return bool(lists[0]) and all(x == lists[0] for x in lists)
    wait_until(agreed, 15, "every member lists the same alarms")
    return list(seen)


def put_error(view: ClusterView, name: str, key: bytes) -> tuple[grpc.StatusCode, str] | None:
    try:
        view.clients[name].kv.Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=10)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return None


def test_nospace_reaches_every_member_and_a_follower_caught_up_by_snapshot(quota3):
    view = quota3
    leader = view.wait_leader()
    follower = next(n for n in view.clients if n != leader)
    kv = view.clients[leader].kv
    value = b"q" * 50_000
    with pytest.raises(grpc.RpcError) as e:
        for i in range(200):
            kv.Put(rpc_pb2.PutRequest(key=b"fill/%03d" % i, value=value), timeout=10)
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, NOSPACE)
    # Every member that applied a put over the quota before any NOSPACE alarm raises its own, as
    # etcd's apply does: one to three alarms, all NOSPACE, listed alike by every member.
    raised = settled_alarms(view)
    assert {a for _, a in raised} == {rpc_pb2.NOSPACE}
    assert 1 <= len(raised) <= 3
    for name in view.clients:  # applied through the log: every member has it
        assert put_error(view, name, b"small") == (grpc.StatusCode.RESOURCE_EXHAUSTED, NOSPACE)
        assert view.clients[name].kv.Range(rpc_pb2.RangeRequest(key=b"fill/000"), timeout=10).kvs

    # A follower misses enough entries (deletes still work) to need the leader's snapshot; the
    # alarm entry is long compacted away when it comes back.
    view.kill(follower)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"gone/%d" % i), timeout=10),
                      range(400)))
    view.restart(follower)
    wait_until(lambda: metric(view, follower, "etcd_network_snapshot_receive_success") >= 1,
               60, f"{follower} installed a snapshot\n{view.procs.log_tail('kv-' + follower)}")
    view.wait_converged(timeout=60)
    raised = settled_alarms(view)  # a slow member's own raise may have landed since
    assert sorted(alarms(view, follower)) == raised
    assert put_error(view, follower, b"small") == (grpc.StatusCode.RESOURCE_EXHAUSTED, NOSPACE)

    # The alarm survives a kill -9 of every member (it is in the store, with the applied index).
    for name in view.clients:
        view.kill(name)
    start_kv_cluster(view.procs, view.spec)
    view.wait_leader(timeout=30)
    for name in view.clients:
        wait_until(lambda name=name: sorted(alarms(view, name)) == raised, 30, f"{name} lists the alarm after restart")

    # compact + defrag + disarm: writes work again, through every member
    leader = view.wait_leader()
    kv = view.clients[leader].kv
    assert kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"fill/", range_end=b"fill0"), timeout=10).deleted > 0
    revision = kv.Range(rpc_pb2.RangeRequest(key=b"x"), timeout=10).header.revision
    kv.Compact(rpc_pb2.CompactionRequest(revision=revision, physical=True), timeout=30)
    # physical=True waits for the serving member only; defragment each once it has compacted too
    view.wait_converged(timeout=30)
    for c in view.clients.values():
        c.maintenance.Defragment(rpc_pb2.DefragmentRequest(), timeout=60)
    for member_id, alarm in raised:
        view.clients[leader].maintenance.Alarm(rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=member_id, alarm=alarm), timeout=10)
    for name in view.clients:
        wait_until(lambda name=name: alarms(view, name) == [], 15, f"{name} cleared the alarm")
        assert put_error(view, name, b"after/" + name.encode()) is None
