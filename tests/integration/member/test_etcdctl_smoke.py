"""etcdctl 3.4.23 works against the member: put/get/del, watch, lease, endpoint status, snapshot.
(The output-for-output comparison with etcd is tests/interop's job.)"""

from __future__ import annotations

import json
import subprocess

from tests.support.etcd_ref import ETCDCTL_BIN
from cluster.launch import wait_until


def ctl(member, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    out = subprocess.run([ETCDCTL_BIN, "--endpoints", member.endpoint, *args], capture_output=True,
                         text=True, timeout=timeout, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return out


def test_etcdctl_kv_lease_status(member, tmp_path):
    assert ctl(member, "put", "foo", "bar").stdout.strip() == "OK"
    assert ctl(member, "get", "foo").stdout.split() == ["foo", "bar"]
    got = json.loads(ctl(member, "get", "foo", "-w", "json").stdout)
    assert got["count"] == 1 and got["kvs"][0]["version"] == 1
    assert ctl(member, "del", "foo").stdout.strip() == "1"

    lease_id = ctl(member, "lease", "grant", "60").stdout.split()[1]
    ctl(member, "put", "--lease", lease_id, "lk", "v")
    ttl = ctl(member, "lease", "timetolive", lease_id, "--keys").stdout
    assert "granted with TTL(60s)" in ttl and "attached keys([lk])" in ttl
    assert lease_id in ctl(member, "lease", "list").stdout
    assert f"lease {lease_id} keepalived with TTL(60)" in ctl(member, "lease", "keep-alive", "--once", lease_id).stdout
    assert f"lease {lease_id} revoked" in ctl(member, "lease", "revoke", lease_id).stdout
    assert ctl(member, "get", "lk").stdout == ""

    status = json.loads(ctl(member, "endpoint", "status", "-w", "json").stdout)[0]["Status"]
    assert status["leader"] == status["header"]["member_id"] and status["raftIndex"] > 0
    assert "is healthy" in ctl(member, "endpoint", "health").stderr
    assert "started" in ctl(member, "member", "list").stdout
    snap = tmp_path / "snap.db"
    assert "Snapshot saved" in ctl(member, "snapshot", "save", str(snap)).stdout
    assert snap.stat().st_size > 0


def test_etcdctl_watch(member, tmp_path):
    out_path = tmp_path / "watch.out"
    with open(out_path, "w") as out:
        watcher = subprocess.Popen([ETCDCTL_BIN, "--endpoints", member.endpoint, "watch", "wk", "--prefix"],
                                   stdout=out, stderr=subprocess.STDOUT, env={"ETCDCTL_API": "3"})
    try:
        def saw_event() -> bool:
            ctl(member, "put", "wk1", "hello")
            return "hello" in out_path.read_text()
        wait_until(saw_event, 15, "etcdctl watch to print the put", interval=0.3)
        assert out_path.read_text().splitlines()[:3] == ["PUT", "wk1", "hello"]
    finally:
        watcher.kill()
        watcher.wait()
