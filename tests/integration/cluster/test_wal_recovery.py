"""A member killed mid-write restarts from its WAL: a torn tail is cut, the member catches up."""

from __future__ import annotations

import pathlib

from protos.etcdserverpb import rpc_pb2


def test_torn_wal_tail_is_cut_and_the_member_catches_up(kv3):
    leader = kv3.wait_leader()
    follower = next(n for n in kv3.clients if n != leader)
    for i in range(50):
        kv3.clients[leader].kv.Put(rpc_pb2.PutRequest(key=b"before/%d" % i, value=b"x"), timeout=5)
    kv3.wait_converged()
    kv3.kill(follower)

    # What a crash in the middle of a write leaves: the start of a record, cut short.
    member = next(m for m in kv3.spec.members if m.name == follower)
    segment = sorted(pathlib.Path(member.data_dir, "member", "wal").glob("*.wal"))[-1]
    with open(segment, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x02\x12\x34")

    for i in range(50):  # the cluster moves on meanwhile
        kv3.clients[leader].kv.Put(rpc_pb2.PutRequest(key=b"after/%d" % i, value=b"x"), timeout=5)
    kv3.restart(follower)
    revision = kv3.wait_converged()

    assert "wal: cut a torn tail left by a crash" in kv3.procs.log_tail(f"kv-{follower}", 400)
    resp = kv3.clients[follower].kv.Range(
        rpc_pb2.RangeRequest(key=b"a", range_end=b"c", count_only=True, serializable=True), timeout=5)
    assert resp.count == 100
    hashes = {c.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=5).hash
              for c in kv3.clients.values()}
    assert len(hashes) == 1
