"""kill -9 under write load: no acknowledged write is lost, every acknowledged write is read back
through another member, and the members converge to equal HashKV."""

from __future__ import annotations

from protos.etcdserverpb import rpc_pb2
from cluster.launch import wait_until

from .cluster_client import FailoverWriter

WRITERS = 4


def acked_count(writers) -> int:
    return sum(len(w.acked) for w in writers)


def wait_for_more_acks(writers, more: int, timeout: float = 20.0) -> None:
    target = acked_count(writers) + more
    wait_until(lambda: acked_count(writers) >= target, timeout, f"{more} more acknowledged writes")


def test_kill_leader_then_follower_under_load_loses_no_acknowledged_write(kv3):
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

        follower = next(n for n in kv3.clients if n != kv3.leader())
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
    print(f"acked={len(acked)} errors={sum(w.errors for w in writers)} "
          f"longest_gap={longest_gap:.2f}s revision={revision}")
    assert longest_gap < 5.0
