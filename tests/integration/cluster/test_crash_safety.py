"""kill -9 under write load (16 clients failing over between endpoints), on 3 and on 5 members:
kill -9 the leader, restart it, kill -9 a follower, restart it. No acknowledged write is lost,
every acknowledged write is read back through another member, and the members converge to equal
HashKV. The longest stretch without an acknowledged write is printed; the `bench` variant also
asserts it is under 3 s (timing: not asserted by default on a loaded machine)."""

from __future__ import annotations

import pytest

from cluster.launch import ClusterSpec, wait_until
from protos.etcdserverpb import rpc_pb2
from tests.support.kvstack import start_kv_cluster

from .cluster_client import ClusterView, FailoverWriter

WRITERS = 16
MAX_STALL_SECONDS = 3.0


def acked_count(writers) -> int:
    return sum(len(w.acked) for w in writers)


def wait_for_more_acks(writers, more: int, timeout: float = 20.0) -> None:
    target = acked_count(writers) + more
    wait_until(lambda: acked_count(writers) >= target, timeout, f"{more} more acknowledged writes")


@pytest.fixture(params=[3, 5], ids=["3-members", "5-members"])
def cluster(request, procs, tmp_path) -> ClusterView:
    spec = start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path), request.param,
                                                        extra_flags=["--log-level", "info"]))
    view = ClusterView(procs, spec)
    try:
        yield view
    finally:
        view.close()


def test_kill_leader_then_follower_under_load_loses_no_acknowledged_write(cluster):
    kill_leader_then_follower(cluster)


@pytest.mark.bench
def test_kill_leader_then_follower_stalls_writes_under_3s(cluster):
    longest_gap = kill_leader_then_follower(cluster)
    assert longest_gap < MAX_STALL_SECONDS


def kill_leader_then_follower(kv3: ClusterView) -> float:
    """The crash run; asserts no loss, no stale read, equal HashKV; returns the longest stall."""
    old_leader = kv3.wait_leader()
    writers = [FailoverWriter(kv3.spec, i) for i in range(WRITERS)]
    for w in writers:
        w.start()
    try:
        wait_for_more_acks(writers, 100)

        kv3.kill(old_leader)  # SIGKILL: no goodbye, no flush
        survivors = [n for n in kv3.clients if n != old_leader]
        new_leader = kv3.wait_leader(survivors)
        assert new_leader != old_leader
        wait_for_more_acks(writers, 100)

        kv3.restart(old_leader)
        kv3.wait_leader()
        wait_for_more_acks(writers, 100)

        follower = next(n for n in kv3.clients if n != kv3.wait_leader())
        kv3.kill(follower)
        wait_for_more_acks(writers, 50)
        kv3.restart(follower)
        kv3.wait_leader()
        wait_for_more_acks(writers, 100)
    finally:
        for w in writers:
            w.stop()

    stale = [r for w in writers for r in w.stale_reads]
    assert not stale, f"linearizable reads missed acknowledged writes: {stale[:5]}"
    revision = kv3.wait_converged()
    acked = {k for w in writers for k in w.acked}
    for name, client in kv3.clients.items():
        resp = client.kv.Range(rpc_pb2.RangeRequest(key=b"load/", range_end=b"load0", keys_only=True,
                                                    serializable=True), timeout=10)
        present = {kv.key for kv in resp.kvs}
        lost = acked - present
        assert not lost, f"{name} lost {len(lost)} acknowledged writes, e.g. {sorted(lost)[:3]}"
    hashes = {name: c.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=10).hash
              for name, c in kv3.clients.items()}
    assert len(set(hashes.values())) == 1, hashes

    # Failover kept writes flowing: the longest stretch without any acknowledgement.
    times = sorted(t for w in writers for t in w.ack_times)
    longest_gap = max(b - a for a, b in zip(times, times[1:]))
    print(f"members={len(kv3.clients)} acked={len(acked)} errors={sum(w.errors for w in writers)} "
          f"longest_gap={longest_gap:.2f}s revision={revision}")
    return longest_gap
