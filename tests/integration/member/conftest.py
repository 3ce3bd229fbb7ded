"""A real one-member `kvcluster` process and gRPC stubs on it, for the member's end-to-end tests."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

import grpc
import pytest

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.launch import ClusterSpec, Member
from tests.support.kvstack import start_kv_cluster
from cluster.launch import ProcessGroup


@dataclass
class MemberClient:
    """Stubs on one member's client URL."""

    spec: ClusterSpec
    channel: grpc.Channel

    @property
    def member(self) -> Member:
        return self.spec.members[0]

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.member.client_port}"

    @property
    def kv(self) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self.channel)

    @property
    def watch(self) -> rpc_pb2_grpc.WatchStub:
        return rpc_pb2_grpc.WatchStub(self.channel)

    @property
    def lease(self) -> rpc_pb2_grpc.LeaseStub:
        return rpc_pb2_grpc.LeaseStub(self.channel)

    @property
    def maintenance(self) -> rpc_pb2_grpc.MaintenanceStub:
        return rpc_pb2_grpc.MaintenanceStub(self.channel)

    @property
    def cluster(self) -> rpc_pb2_grpc.ClusterStub:
        return rpc_pb2_grpc.ClusterStub(self.channel)

    def put(self, key: bytes, value: bytes = b"v", **kw) -> rpc_pb2.PutResponse:
        return self.kv.Put(rpc_pb2.PutRequest(key=key, value=value, **kw), timeout=10)

    def get(self, key: bytes, **kw) -> rpc_pb2.RangeResponse:
        return self.kv.Range(rpc_pb2.RangeRequest(key=key, **kw), timeout=10)


def start_member(procs: ProcessGroup, spec: ClusterSpec, extra_flags: list[str] | None = None) -> MemberClient:
    start_kv_cluster(procs, spec, extra_flags=extra_flags)
    channel = grpc.insecure_channel(f"127.0.0.1:{spec.members[0].client_port}")
    grpc.channel_ready_future(channel).result(timeout=10)
    return MemberClient(spec, channel)


@pytest.fixture
def member(procs, tmp_path) -> MemberClient:
    """A running one-member kvcluster with default flags."""
    client = start_member(procs, ClusterSpec.allocate(str(tmp_path), 1))
    yield client
    client.channel.close()


def metric(client: MemberClient, name: str) -> float:
    """The value of an unlabelled sample on the member's /metrics (NaN when absent)."""
    with urllib.request.urlopen(f"{client.member.metrics_url}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")
