"""etcdctl 3.4.23 against a 3-member cluster: every member publishes its client URLs through the
log, so `member list` shows them all and the `--cluster` commands reach every member (also a
member just restarted); `move-leader` hands leadership over, with etcd's errors."""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest

from cluster.launch import wait_until
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.etcd_ref import ETCDCTL_BIN


def ctl(endpoints: str, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    out = subprocess.run([ETCDCTL_BIN, "--endpoints", endpoints, *args], capture_output=True, text=True,
                         timeout=timeout, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    if check:
        assert out.returncode == 0, out.stderr
    return out


def member_urls(endpoint: str) -> dict[str, tuple[list[str], list[str]]]:
    """`etcdctl member list -w json` through `endpoint`: name -> (peer URLs, client URLs)."""
    members = json.loads(ctl(endpoint, "member", "list", "-w", "json").stdout)["members"]
    return {m.get("name", ""): (m.get("peerURLs", []), m.get("clientURLs", [])) for m in members}


def test_member_list_and_cluster_wide_endpoint_commands(kv3):
    spec = kv3.spec
    expected = {m.name: ([m.peer_url], [m.client_url]) for m in spec.members}
    leader = kv3.wait_leader()
    follower = next(m for m in spec.members if m.name != leader)

    for m in spec.members:  # every member reports every member's URLs once they published
        wait_until(lambda m=m: member_urls(m.endpoint) == expected, 20,
                   f"member list through {m.name} to show all client URLs")

    # The --cluster commands dial every member's client URLs from MemberList, through one endpoint.
    status = json.loads(ctl(follower.endpoint, "endpoint", "status", "--cluster", "-w", "json").stdout)
    assert sorted(s["Endpoint"] for s in status) == sorted(m.client_url for m in spec.members)
    assert len({s["Status"]["header"]["member_id"] for s in status}) == 3
    assert len({s["Status"]["leader"] for s in status}) == 1
    out = ctl(follower.endpoint, "endpoint", "health", "--cluster")
    health = out.stdout + out.stderr
    assert health.count("is healthy") == 3, health
    hashkv = json.loads(ctl(follower.endpoint, "endpoint", "hashkv", "--cluster", "-w", "json").stdout)
    assert len(hashkv) == 3

    # Published attributes survive a restart: the restarted member knows every client URL as
    # soon as it serves (the membership record in its store), before anything new is applied.
    kv3.kill(follower.name)
    kv3.restart(follower.name)
    assert member_urls(follower.endpoint) == expected


def test_move_leader_with_etcdctl_and_etcds_errors(kv3):
    spec = kv3.spec
    leader = kv3.wait_leader()
    target = next(m for m in spec.members if m.name != leader)
    target_id = kv3.clients[target.name].status().header.member_id

    out = ctl(spec.endpoints, "move-leader", f"{target_id:x}")
    assert f"to {target_id:x}" in out.stdout, out.stdout
    # The transfer has completed when MoveLeader returns: the old leader already follows it.
    assert kv3.clients[leader].status().leader == target_id
    assert kv3.wait_leader() == target.name

    bad = ctl(spec.endpoints, "move-leader", "1234abcd", check=False)
    assert bad.returncode != 0 and "etcdserver: bad leader transferee" in bad.stderr, bad.stderr

    # MoveLeader asked of a follower: "etcdserver: not leader" (FailedPrecondition), as etcd.
    follower = next(m for m in spec.members if m.name != target.name)
    with grpc.insecure_channel(follower.endpoint) as ch:
        with pytest.raises(grpc.RpcError) as err:
            rpc_pb2_grpc.MaintenanceStub(ch).MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=target_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "etcdserver: not leader"
