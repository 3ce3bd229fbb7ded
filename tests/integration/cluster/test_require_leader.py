"""Calls with `hasleader: true` metadata (Go clientv3's WithRequireLeader: etcdctl watch,
Kubernetes' watches) on a member that loses its leader, against etcd 3.4.23 and kvcluster alike:
its require-leader Watch and LeaseKeepAlive streams end with "etcdserver: no leader", new such
calls are refused at once, and calls without the metadata go on (a plain watch stays open, a
serializable Range is served)."""

from __future__ import annotations

import threading

import grpc
import pytest

from cluster.launch import ClusterSpec
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.etcd_ref import start_etcd_cluster
from tests.support.kvstack import start_kv_cluster

from .cluster_client import ClusterView

REQUIRE_LEADER = (("hasleader", "true"),)
NO_LEADER = (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
STACKS = {"etcd": ("etcd-", start_etcd_cluster), "kv": ("kv-", start_kv_cluster)}


def held_open(first, until: threading.Event):
    """A request stream that sends `first` and then stays open (a closed request stream would
    end a Watch by itself) until `until` is set."""
    yield first
    until.wait()


@pytest.mark.parametrize("stack", list(STACKS))
def test_a_member_without_leader_ends_and_refuses_require_leader_calls(stack, procs, tmp_path):
    prefix, start = STACKS[stack]
    spec = ClusterSpec.allocate(str(tmp_path), 3)
    start(procs, spec)
    view = ClusterView(procs, spec)
    done = threading.Event()
    channel = None
    try:
        leader = view.wait_leader()
        survivor = next(m for m in spec.members if m.name != leader)
        channel = grpc.insecure_channel(survivor.endpoint)
        watch = rpc_pb2_grpc.WatchStub(channel)
        lease = rpc_pb2_grpc.LeaseStub(channel)
        kv = rpc_pb2_grpc.KVStub(channel)
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k"))
        required = watch.Watch(held_open(create, done), metadata=REQUIRE_LEADER)
        plain = watch.Watch(held_open(create, done))
        assert next(required).created and next(plain).created
        lease_id = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10).ID
        keepalive = lease.LeaseKeepAlive(held_open(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id), done),
                                          metadata=REQUIRE_LEADER)
        assert next(keepalive).TTL > 0

        for m in spec.members:
            if m is not survivor:
                procs.kill(prefix + m.name)

        # etcd: no leader for 3 checks one election timeout (1 s) apart, after the election
        # timeout that tells the member its leader is gone
        for call in (required, keepalive):
            ended = call.exception(timeout=30)
            assert ended is not None and (ended.code(), ended.details()) == NO_LEADER
        assert not plain.done()
        with pytest.raises(grpc.RpcError) as refused:
            kv.Range(rpc_pb2.RangeRequest(key=b"k", serializable=True), metadata=REQUIRE_LEADER, timeout=10)
        assert (refused.value.code(), refused.value.details()) == NO_LEADER
        with pytest.raises(grpc.RpcError) as refused:
            next(watch.Watch(held_open(create, done), metadata=REQUIRE_LEADER, timeout=10))
        assert (refused.value.code(), refused.value.details()) == NO_LEADER
        assert kv.Range(rpc_pb2.RangeRequest(key=b"k", serializable=True), timeout=10).count == 0
        assert not plain.done()  # still open after every check that ended the others
        plain.cancel()
    finally:
        done.set()
        if channel is not None:
            channel.close()
        view.close()
