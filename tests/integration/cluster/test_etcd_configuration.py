"""A member configured the ways etcd 3.4 members are: ETCD_* environment variables (as
`etcdctl member add` prints them for the new member), refused configurations side by side with
etcd 3.4.23, and the etcd flags that shape a member's files and logs (--wal-dir, --max-wals,
--log-outputs, --experimental-warning-apply-duration)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request

import grpc

from cluster.launch import KVCLUSTER, ClusterSpec, Member, free_port, port_open, wait_until
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.etcd_ref import ETCD_BIN, ETCDCTL_BIN
from tests.support.kvstack import start_kv_cluster


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    return {**env, "ETCDCTL_API": "3", **extra}


def etcdctl(endpoints: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([ETCDCTL_BIN, "--endpoints", endpoints, "--command-timeout", "10s", *args],
                          capture_output=True, text=True, timeout=30, env=clean_env())


def put_get(endpoint: str, key: bytes) -> bytes:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        kv.Put(rpc_pb2.PutRequest(key=key, value=b"v-" + key), timeout=10)
        return kv.Range(rpc_pb2.RangeRequest(key=key), timeout=10).kvs[0].value


def test_refused_environments_exit_as_etcd(tmp_path):
    """The same bad environment given to etcd 3.4.23 and to kvcluster: both exit with status 1
    and the same words."""
    cases = [
        ({"ETCD_SNAPSHOT_COUNT": "5"}, ["--snapshot-count", "6"],
         'conflicting environment variable "ETCD_SNAPSHOT_COUNT" is shadowed by corresponding '
         "command-line flag (either unset environment variable or disable flag)"),
        ({"ETCD_SNAPSHOT_COUNT": "abc"}, [], 'invalid value "abc" for ETCD_SNAPSHOT_COUNT: parse error'),
        ({"ETCD_INITIAL_CLUSTER_STATE": "maybe"}, [],
         'invalid value "maybe" for ETCD_INITIAL_CLUSTER_STATE: invalid value'),
        ({"ETCD_GRPC_KEEPALIVE_MIN_TIME": "5"}, [], 'invalid value "5" for ETCD_GRPC_KEEPALIVE_MIN_TIME: parse error'),
    ]
    for env, argv, message in cases:
        for binary in ([ETCD_BIN], KVCLUSTER):
            r = subprocess.run([*binary, *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                               env=clean_env(ETCD_UNSUPPORTED_ARCH="", **env) if binary == [ETCD_BIN]
                               else clean_env(**env))
            assert r.returncode == 1, (binary, env, r.stderr)
            assert message in r.stderr, (binary, env, r.stderr)
    assert not os.listdir(tmp_path), "nothing may be created before the configuration is accepted"


def test_member_added_with_etcdctl_starts_from_the_variables_it_printed(procs, tmp_path):
    """`etcdctl member add` prints ETCD_NAME, ETCD_INITIAL_CLUSTER, ETCD_INITIAL_ADVERTISE_PEER_URLS
    and ETCD_INITIAL_CLUSTER_STATE for the new member: started with those in its environment and
    only its own listen URLs and data dir as flags (one-dash, as older etcd docs write them),
    it joins and serves."""
    spec = start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path), 1))
    first = spec.members[0]
    wait_until(lambda: etcdctl(first.endpoint, "endpoint", "health").returncode == 0, 30, "m1 healthy")
    new = Member("m2", free_port(), free_port(), free_port(), str(tmp_path / "m2.data"))
    added = etcdctl(first.endpoint, "member", "add", "m2", f"--peer-urls={new.peer_url}")
    assert added.returncode == 0, added.stderr
    printed = dict(re.findall(r'^(ETCD_[A-Z_]+)="(.*)"$', added.stdout, re.M))
    assert set(printed) == {"ETCD_NAME", "ETCD_INITIAL_CLUSTER", "ETCD_INITIAL_ADVERTISE_PEER_URLS",
                            "ETCD_INITIAL_CLUSTER_STATE"}, added.stdout
    assert printed["ETCD_INITIAL_CLUSTER_STATE"] == "existing"

    procs.start("kv-m2", [*KVCLUSTER, "-data-dir", new.data_dir, "-listen-client-urls", new.client_url,
                          "-advertise-client-urls", new.client_url, "-listen-peer-urls", new.peer_url,
                          "-log-level", "info"], env=printed)
    wait_until(lambda: port_open(new.client_port), 30, "m2 serving\n" + procs.log_tail("kv-m2"))
    assert put_get(new.endpoint, b"joined") == b"v-joined"
    members = json.loads(etcdctl(first.endpoint, "member", "list", "-w", "json").stdout)["members"]
    assert sorted((m.get("name"), m["peerURLs"], m.get("clientURLs")) for m in members) == [
        ("m1", [first.peer_url], [first.client_url]), ("m2", [new.peer_url], [new.client_url])]
    log = procs.log_tail("kv-m2", 400)
    assert "recognized and used environment variable ETCD_NAME=m2" in log


def test_wal_dir_max_wals_log_outputs_and_slow_applies(procs, tmp_path):
    """--wal-dir holds the WAL (nothing under the data dir's member/wal) across a restart;
    --max-wals 0 keeps the segments a snapshot covers; --log-outputs writes the log to a file;
    --experimental-warning-apply-duration 1ns makes every apply "take too long": logged and
    counted in etcd_server_slow_apply_total."""
    wal_dir, log_file = tmp_path / "wal", tmp_path / "member.log"
    spec = ClusterSpec.allocate(str(tmp_path), 1, [
        "--wal-dir", str(wal_dir), "--max-wals", "0", "--snapshot-count", "50",
        "--log-outputs", str(log_file), "--experimental-warning-apply-duration", "1ns"])
    m = spec.members[0]
    env = {"KVCLUSTER_WAL_SEGMENT_BYTES": "4096"}
    procs.start("kv-m1", [*KVCLUSTER, *spec.argv(m)], env=env)
    wait_until(lambda: port_open(m.client_port), 30, procs.log_tail("kv-m1"))
    for i in range(200):
        put_get(m.endpoint, b"k%d" % i)
    segments = sorted(p for p in os.listdir(wal_dir) if p.endswith(".wal"))
    snapshots = sorted(p for p in os.listdir(os.path.join(m.data_dir, "member", "snap")) if p.endswith(".snap"))
    assert snapshots, "--snapshot-count 50: the member took snapshots"
    assert len(segments) > 2 and segments[0] == "0000000000000000-0000000000000000.wal", segments
    assert not os.path.exists(os.path.join(m.data_dir, "member", "wal"))

    with urllib.request.urlopen(f"{m.metrics_url}/metrics", timeout=5) as r:
        slow = [line for line in r.read().decode().splitlines() if line.startswith("etcd_server_slow_apply_total ")]
    assert slow and float(slow[0].split()[1]) >= 200, slow
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(x["msg"] == "apply request took too long" and x["request"] == "put" for x in lines)
    assert procs.log_tail("kv-m1").strip() == "", "--log-outputs: nothing on stderr"

    procs.kill("kv-m1", signal.SIGTERM)
    procs.start("kv-m1", [*KVCLUSTER, *spec.argv(m)], env=env)
    wait_until(lambda: port_open(m.client_port), 30, procs.log_tail("kv-m1"))
    with grpc.insecure_channel(m.endpoint) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l", count_only=True),
                                             timeout=10)
    assert resp.count == 200
