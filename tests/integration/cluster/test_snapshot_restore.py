"""`etcdctl snapshot save` from a 3-member kvcluster under writes, then `kvcluster snapshot
restore` into 3 new data dirs started as a new cluster: every key at its revisions, a new
cluster ID, equal HashKV; and the files restore refuses (etcd's bbolt, corrupt, no hash)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from cluster.launch import KVCLUSTER, ClusterSpec
from protos.etcdserverpb import rpc_pb2
from tests.support.etcd_ref import ETCDCTL_BIN, start_etcd_cluster
from tests.support.kvstack import start_kv_cluster

from .cluster_client import ClusterView, FailoverWriter

ETCDCTL_ENV = {"PATH": os.environ.get("PATH", ""), "ETCDCTL_API": "3"}


def etcdctl(endpoints: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([ETCDCTL_BIN, "--endpoints", endpoints, "--command-timeout", "30s", *args],
                          capture_output=True, text=True, timeout=timeout, env=ETCDCTL_ENV)


def kvcluster_snapshot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KVCLUSTER, "snapshot", *args], capture_output=True, text=True, timeout=120)


def restore_flags(spec: ClusterSpec, m) -> list[str]:
    return ["--data-dir", m.data_dir, "--name", m.name, "--initial-cluster", spec.initial_cluster,
            "--initial-cluster-token", spec.token, "--initial-advertise-peer-urls", m.peer_url]


def all_kvs(stub) -> dict[bytes, tuple[bytes, int, int, int]]:
    resp = stub.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"), timeout=30)
    return {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in resp.kvs}


def test_restore_a_saved_snapshot_into_a_new_three_member_cluster(procs, tmp_path):
    old = start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path / "old"), 3))
    view = ClusterView(procs, old)
    view.wait_leader(timeout=30)
    writers = [FailoverWriter(old, i, prefix=b"snap") for i in range(4)]
    for w in writers:
        w.start()
    try:
        stub = view.clients["m1"].kv
        for i in range(50):  # some keys with several versions
            stub.Put(rpc_pb2.PutRequest(key=b"multi/%02d" % (i % 10), value=b"v%d" % i), timeout=10)
        snap = str(tmp_path / "save.db")
        saved = etcdctl(old.members[0].endpoint, "snapshot", "save", snap)
        assert saved.returncode == 0, saved.stderr
    finally:
        for w in writers:
            w.stop()
    assert sum(len(w.acked) for w in writers) > 0

    # the snapshot as the saving member had it: read from a store opened on its content
    status = kvcluster_snapshot("status", snap, "-w", "json")
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    snap_revision = st["revision"]
    assert snap_revision > 50 and st["totalKey"] >= 10

    new = ClusterSpec.allocate(str(tmp_path / "new"), 3)
    new.token = "restored-cluster"
    for m in new.members:
        done = kvcluster_snapshot("restore", snap, *restore_flags(new, m))
        assert done.returncode == 0, done.stderr
    # restore refuses an existing data dir, as etcdctl
    again = kvcluster_snapshot("restore", snap, *restore_flags(new, new.members[0]))
    assert again.returncode != 0 and "exists" in again.stderr

    # the old cluster's state at the snapshot's revision, to compare with
    old_stub = view.clients["m2"].kv
    expected = {k: v for k, v in all_kvs(old_stub).items() if v[2] <= snap_revision}
    old_cluster_id = view.clients["m1"].status().header.cluster_id

    start_kv_cluster(procs, new)
    new_view = ClusterView(procs, new)
    try:
        new_view.wait_leader(timeout=30)
        sts = [c.status(timeout=5) for c in new_view.clients.values()]
        cluster_ids = {s.header.cluster_id for s in sts}
        assert len(cluster_ids) == 1 and cluster_ids != {old_cluster_id}
        for name, c in new_view.clients.items():
            got = all_kvs(c.kv)
            # every key is written once after the snapshot's first puts (unique writer keys,
            # multi/ keys before the save): exactly the keys at or below its revision, as they were
            assert got == expected, name
            header = c.kv.Range(rpc_pb2.RangeRequest(key=b"x"), timeout=10).header
            assert header.revision == snap_revision, name
        hashes = {c.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=0), timeout=30).hash
                  for c in new_view.clients.values()}
        assert len(hashes) == 1
        # the new cluster takes writes
        put = new_view.clients["m3"].kv.Put(rpc_pb2.PutRequest(key=b"after", value=b"restore"), timeout=10)
        assert put.header.revision == snap_revision + 1
    finally:
        new_view.close()
        view.close()


def test_restore_refuses_etcd_snapshots_and_corrupt_files(procs, tmp_path):
    etcd = start_etcd_cluster(procs, ClusterSpec.allocate(str(tmp_path / "etcd"), 1))
    bolt = str(tmp_path / "etcd.db")
    assert etcdctl(etcd.endpoints, "put", "k", "v").returncode == 0
    saved = etcdctl(etcd.endpoints, "snapshot", "save", bolt)
    assert saved.returncode == 0, saved.stderr
    spec = ClusterSpec.allocate(str(tmp_path / "new"), 1)
    m = spec.members[0]
    refused = kvcluster_snapshot("restore", bolt, *restore_flags(spec, m))
    assert refused.returncode == 1 and "etcd (bbolt) snapshot" in refused.stderr
    assert not os.path.exists(m.data_dir)

    kv = start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path / "kv"), 1))
    good = str(tmp_path / "kv.db")
    assert etcdctl(kv.endpoints, "put", "k", "v").returncode == 0
    assert etcdctl(kv.endpoints, "snapshot", "save", good).returncode == 0
    corrupt = str(tmp_path / "corrupt.db")
    shutil.copy(good, corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(8192 + 100)
        byte = f.read(1)
        f.seek(8192 + 100)
        f.write(bytes([byte[0] ^ 0xFF]))
    refused = kvcluster_snapshot("restore", corrupt, *restore_flags(spec, m))
    assert refused.returncode == 1 and "expected sha256" in refused.stderr
    truncated = str(tmp_path / "nohash.db")
    with open(good, "rb") as fin, open(truncated, "wb") as fout:
        fout.write(fin.read()[:-32])
    refused = kvcluster_snapshot("restore", truncated, *restore_flags(spec, m))
    assert refused.returncode == 1 and "snapshot missing hash" in refused.stderr
    assert not os.path.exists(m.data_dir)
    other = kvcluster_snapshot("restore", good, *restore_flags(spec, m)[:2], "--name", "nobody",
                               "--initial-cluster", spec.initial_cluster)
    assert other.returncode == 1 and "couldn't find local name" in other.stderr
    used_wal_dir = kvcluster_snapshot("restore", good, *restore_flags(spec, m), "--wal-dir", str(tmp_path))
    assert used_wal_dir.returncode == 1 and "exists" in used_wal_dir.stderr
    wal_dir = str(tmp_path / "new-wal")
    assert kvcluster_snapshot("restore", good, *restore_flags(spec, m), "--wal-dir", wal_dir).returncode == 0
    spec.extra_flags = ["--wal-dir", wal_dir]
    start_kv_cluster(procs, spec)
    assert etcdctl(spec.endpoints, "get", "k", "--print-value-only").stdout.strip() == "v"
    assert any(p.endswith(".wal") for p in os.listdir(wal_dir))
    assert not os.path.exists(os.path.join(m.data_dir, "member", "wal"))
