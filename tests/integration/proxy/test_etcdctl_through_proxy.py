"""etcdctl (3.4.23) through kvproxy in front of etcd 3.4.23: KV, compaction, maintenance, cluster."""

from __future__ import annotations

import json
import os
import subprocess

from tests.support.etcd_ref import ETCDCTL_BIN, ClusterSpec
from tests.support.kvstack import start_kv_cluster, start_kvproxy
from cluster.launch import wait_until

from .conftest import metric


def etcdctl(port: int, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([ETCDCTL_BIN, f"--endpoints=127.0.0.1:{port}", *args], input=stdin,
                          capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def get_json(port: int, *args: str) -> dict:
    return json.loads(etcdctl(port, "get", "-w", "json", *args).stdout)


def test_kv_commands(proxy1, etcd1):
    check_kv_commands(proxy1.port, etcd1.members[0].client_port)


def test_kv_commands_in_front_of_kvcluster(procs, tmp_path):
    """The same commands with our own cluster upstream (one kvcluster member)."""
    cluster = start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path), 1))
    proxy = start_kvproxy(procs, cluster)
    wait_until(lambda: metric(proxy.metrics_url, "kvproxy_cache_coherent") == 1, 20, "cache watch on kvcluster")
    check_kv_commands(proxy.port, cluster.members[0].client_port)
    # Coherent with writes made straight to our cluster too.
    etcdctl(proxy.port, "get", "a", "--consistency=s")
    etcdctl(cluster.members[0].client_port, "put", "a", "direct")
    wait_until(lambda: etcdctl(proxy.port, "get", "a", "--consistency=s").stdout.split() == ["a", "direct"],
               5, "direct write on kvcluster served by the proxy")


def check_kv_commands(p: int, direct_port: int) -> None:
    assert etcdctl(p, "put", "a", "1").stdout.strip() == "OK"
    etcdctl(p, "put", "b", "2")
    etcdctl(p, "put", "c", "3")
    assert etcdctl(p, "get", "a").stdout.split() == ["a", "1"]
    assert etcdctl(p, "get", "a", "--consistency=s").stdout.split() == ["a", "1"]
    assert etcdctl(p, "get", "a", "--prefix", "--keys-only").stdout.split() == ["a"]
    assert etcdctl(p, "get", "a", "c").stdout.split() == ["a", "1", "b", "2"]
    assert etcdctl(p, "get", "--from-key", "b", "--consistency=s").stdout.split() == ["b", "2", "c", "3"]
    limited = get_json(p, "--prefix", "", "--limit", "1", "--sort-by=KEY", "--order=DESCEND")
    assert limited["more"] is True and limited["count"] == 3
    assert [kv["key"] for kv in limited["kvs"]] == ["Yw=="]  # base64 of "c"
    put_rev = get_json(p, "a")["kvs"][0]["mod_revision"]
    etcdctl(p, "put", "a", "10")
    assert etcdctl(p, "get", "a", f"--rev={put_rev}").stdout.split() == ["a", "1"]
    assert etcdctl(p, "get", "a", "--consistency=s").stdout.split() == ["a", "10"]  # read-your-writes

    assert etcdctl(p, "del", "b").stdout.strip() == "1"
    assert etcdctl(p, "get", "b", "--consistency=s").stdout == ""
    assert etcdctl(p, "del", "--prev-kv", "c").stdout.split() == ["1", "c", "3"]

    txn = etcdctl(p, "txn", stdin='value("a") = "10"\n\nput a 11\n\nput a 12\n\n')
    assert txn.stdout.split()[0] == "SUCCESS"
    assert etcdctl(p, "get", "a", "--consistency=s").stdout.split() == ["a", "11"]
    txn = etcdctl(p, "txn", stdin='value("a") = "nope"\n\nput a 13\n\nput a 14\n\n')
    assert txn.stdout.split()[0] == "FAILURE"
    assert etcdctl(p, "get", "a").stdout.split() == ["a", "14"]

    # The proxy's answers are the cluster's answers.
    direct = get_json(direct_port, "a")
    assert get_json(p, "a")["kvs"] == direct["kvs"]


def test_compaction_then_compacted_revision_errors_as_etcd(proxy1, etcd1):
    p = proxy1.port
    etcdctl(p, "put", "k", "v1")
    rev = get_json(p, "k")["kvs"][0]["mod_revision"]
    etcdctl(p, "put", "k", "v2")
    assert etcdctl(p, "get", "k", f"--rev={rev}", "--consistency=s").stdout.split() == ["k", "v1"]  # cached
    assert etcdctl(p, "compaction", str(rev + 1)).stdout.strip() == f"compacted revision {rev + 1}"
    old = etcdctl(p, "get", "k", f"--rev={rev}", "--consistency=s", check=False)
    assert old.returncode != 0
    assert "etcdserver: mvcc: required revision has been compacted" in old.stderr


def test_maintenance_and_cluster_commands(proxy1, etcd1, tmp_path):
    p = proxy1.port
    status = json.loads(etcdctl(p, "endpoint", "status", "-w", "json").stdout)
    assert status[0]["Status"]["version"] == "3.4.23"
    members = json.loads(etcdctl(p, "member", "list", "-w", "json").stdout)["members"]
    assert [m["name"] for m in members] == ["m1"]
    assert "Finished defragmenting" in etcdctl(p, "defrag").stdout
    assert etcdctl(p, "alarm", "list").stdout == ""
    assert "is healthy" in etcdctl(p, "endpoint", "health").stderr + etcdctl(p, "endpoint", "health").stdout
    etcdctl(p, "put", "snapkey", "snapvalue")
    snap = tmp_path / "snap.db"
    etcdctl(p, "snapshot", "save", str(snap))
    info = json.loads(etcdctl(p, "snapshot", "status", str(snap), "-w", "json").stdout)
    assert info["totalKey"] >= 1 and snap.stat().st_size > 0


def test_namespace_isolates_and_strips(procs, etcd1):
    proxy = start_kvproxy(procs, etcd1, name="ns-proxy", extra_flags=["--namespace", "tenant/"])
    p, direct = proxy.port, etcd1.members[0].client_port
    etcdctl(p, "put", "k", "v")
    etcdctl(direct, "put", "outside", "x")
    assert etcdctl(direct, "get", "tenant/k").stdout.split() == ["tenant/k", "v"]
    assert etcdctl(p, "get", "k", "--consistency=s").stdout.split() == ["k", "v"]
    assert etcdctl(p, "get", "--from-key", "", "--consistency=s").stdout.split() == ["k", "v"]
    assert etcdctl(p, "get", "--prefix", "", "--keys-only").stdout.split() == ["k"]
    etcdctl(direct, "put", "tenant/k", "changed")  # seen by the namespaced cache's watch
    assert etcdctl(p, "get", "k", "--consistency=s").stdout.split() == ["k", "changed"]
    assert etcdctl(p, "del", "--prefix", "", "--prev-kv").stdout.split() == ["1", "k", "changed"]
    assert etcdctl(direct, "get", "outside").stdout.split() == ["outside", "x"]
