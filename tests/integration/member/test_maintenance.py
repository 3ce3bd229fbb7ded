"""Maintenance, Cluster, metrics, health and reflection of a real kvcluster process."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cluster.server.membership import cluster_id, member_id
from protos.etcdserverpb import rpc_pb2
from cluster.launch import ClusterSpec
from cluster.launch import wait_until

from .conftest import metric, start_member


def test_status_hash_hashkv_defrag(member):
    rev = member.put(b"a", b"1").header.revision
    st = member.maintenance.Status(rpc_pb2.StatusRequest())
    assert st.leader == st.header.member_id and st.raftTerm >= 1
    assert st.raftIndex >= 2 and st.raftAppliedIndex == st.raftIndex  # the term's first entry + the put
    assert st.dbSize > 0 and 0 < st.dbSizeInUse <= st.dbSize
    # Go clientv3's RejectOldCluster check: MAJOR.MINOR of every member's version >= 3.2
    major, minor, _patch = (int(part) for part in st.version.split("."))
    assert (major, minor) >= (3, 2)
    assert not st.errors
    h1 = member.maintenance.Hash(rpc_pb2.HashRequest()).hash
    assert h1 == member.maintenance.Hash(rpc_pb2.HashRequest()).hash
    kv1 = member.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=rev))
    assert kv1.header.revision == rev and kv1.compact_revision == -1  # never compacted, as etcd
    member.put(b"b", b"2")
    assert member.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=rev)).hash == kv1.hash
    assert member.maintenance.HashKV(rpc_pb2.HashKVRequest()).hash != kv1.hash
    with pytest.raises(grpc.RpcError) as e:
        member.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=rev + 100))
    assert e.value.details() == "etcdserver: mvcc: required revision is a future revision"
    member.maintenance.Defragment(rpc_pb2.DefragmentRequest())
    assert member.get(b"a").kvs[0].value == b"1"
    assert member.maintenance.HashKV(rpc_pb2.HashKVRequest(revision=rev)).hash == kv1.hash


def test_snapshot_stream_ends_with_sha256_of_content(member):
    for i in range(50):
        member.put(b"snap%02d" % i, b"x" * 1000)
    chunks = list(member.maintenance.Snapshot(rpc_pb2.SnapshotRequest()))
    data, checksum = chunks[:-1], chunks[-1]
    blob = b"".join(c.blob for c in data)
    assert len(blob) > 50_000
    assert [c.remaining_bytes for c in data] == sorted((c.remaining_bytes for c in data), reverse=True)
    assert data[-1].remaining_bytes == 0 and data[0].remaining_bytes == len(blob) - len(data[0].blob)
    assert checksum.remaining_bytes == 0 and checksum.blob == hashlib.sha256(blob).digest()
    assert b"snap49" in blob


def test_alarm_activate_gates_writes_until_disarmed(member):
    member.put(b"keep", b"1")
    me = member.maintenance.Status(rpc_pb2.StatusRequest()).header.member_id
    req = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=me, alarm=rpc_pb2.NOSPACE)
    assert [(a.memberID, a.alarm) for a in member.maintenance.Alarm(req).alarms] == [(me, rpc_pb2.NOSPACE)]
    listed = member.maintenance.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET))
    assert [(a.memberID, a.alarm) for a in listed.alarms] == [(me, rpc_pb2.NOSPACE)]
    assert member.maintenance.Status(rpc_pb2.StatusRequest()).errors == [f"memberID:{me} alarm:NOSPACE "]
    with pytest.raises(grpc.RpcError) as e:
        member.put(b"new", b"v")
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                   "etcdserver: mvcc: database space exceeded")
    assert member.get(b"keep").kvs  # reads work
    assert member.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"keep")).deleted == 1  # and deletes
    req.action = rpc_pb2.AlarmRequest.DEACTIVATE
    member.maintenance.Alarm(req)
    assert not member.maintenance.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET)).alarms
    assert member.put(b"new", b"v")


def test_quota_backend_bytes_raises_nospace(procs, tmp_path):
    m = start_member(procs, ClusterSpec.allocate(str(tmp_path), 1), ["--quota-backend-bytes", str(2 * 1024 * 1024)])
    value = b"q" * 100_000
    with pytest.raises(grpc.RpcError) as e:
        for i in range(100):
            m.put(b"q%03d" % i, value)
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                   "etcdserver: mvcc: database space exceeded")
    alarms = m.maintenance.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET)).alarms
    assert [a.alarm for a in alarms] == [rpc_pb2.NOSPACE]
    assert m.get(b"q000").kvs  # reads still work
    assert m.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"q", range_end=b"r")).deleted > 0
    with pytest.raises(grpc.RpcError):
        m.put(b"small", b"v")  # until disarmed
    with pytest.raises(urllib.error.HTTPError) as h:
        urllib.request.urlopen(f"{m.member.metrics_url}/health", timeout=5)
    assert h.value.code == 503
    m.channel.close()


def test_move_leader_and_member_list(member):
    spec = member.spec
    own = member.member
    listed = member.cluster.MemberList(rpc_pb2.MemberListRequest())
    expected_id = member_id([own.peer_url], spec.token)
    assert [(x.ID, x.name, list(x.peerURLs), list(x.clientURLs)) for x in listed.members] == [
        (expected_id, own.name, [own.peer_url], [own.client_url])]
    assert listed.header.member_id == expected_id and listed.header.cluster_id == cluster_id([expected_id])
    assert member.maintenance.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=expected_id)) == rpc_pb2.MoveLeaderResponse()
    with pytest.raises(grpc.RpcError) as e:
        member.maintenance.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=12345))
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: bad leader transferee")
    with pytest.raises(grpc.RpcError) as e:
        member.cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=12345))
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.NOT_FOUND, "etcdserver: member not found")


def test_metrics_health_and_reflection(member):
    for i in range(3):
        member.put(b"m%d" % i, b"v")
    member.get(b"m0")
    with urllib.request.urlopen(f"{member.member.metrics_url}/health", timeout=5) as r:
        assert r.status == 200 and b'"health":"true"' in r.read().replace(b" ", b"")
    assert metric(member, "etcd_mvcc_put_total") == 3
    assert metric(member, "etcd_mvcc_range_total") >= 1
    assert metric(member, "etcd_server_is_leader") == 1 and metric(member, "etcd_server_has_leader") == 1
    wait_until(lambda: metric(member, "etcd_debugging_mvcc_keys_total") == 3, 15, "the key count")
    assert metric(member, "etcd_server_proposals_applied_total") >= 3
    assert metric(member, "etcd_mvcc_db_total_size_in_bytes") > 0
    assert metric(member, "etcd_disk_wal_fsync_duration_seconds_count") >= 1
    assert metric(member, "etcd_disk_backend_commit_duration_seconds_count") >= 1
    stub = reflection_pb2_grpc.ServerReflectionStub(member.channel)
    resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in resp.list_services_response.service}
    assert {"etcdserverpb.KV", "etcdserverpb.Watch", "etcdserverpb.Lease", "etcdserverpb.Maintenance",
            "etcdserverpb.Cluster"} <= names
