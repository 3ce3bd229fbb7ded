"""Leases over a real kvcluster process: grant, keepalive, time-to-live, revoke, expiry, min TTL."""

from __future__ import annotations

import time

import grpc
import pytest

from protos.etcdserverpb import rpc_pb2
from cluster.launch import wait_until


def test_grant_attach_ttl_revoke(member):
    lease = member.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60))
    assert lease.ID > 0 and lease.TTL == 60 and lease.header.member_id
    member.put(b"l1", b"v", lease=lease.ID)
    member.put(b"l2", b"v", lease=lease.ID)
    member.put(b"other", b"v")
    ttl = member.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease.ID, keys=True))
    assert ttl.grantedTTL == 60 and 58 <= ttl.TTL <= 60 and sorted(ttl.keys) == [b"l1", b"l2"]
    assert lease.ID in [s.ID for s in member.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest()).leases]
    before = member.get(b"other").header.revision
    revoked = member.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease.ID))
    # both keys deleted in one revision
    assert revoked.header.revision == before + 1
    assert not member.get(b"l", range_end=b"m").kvs
    assert member.get(b"other").kvs
    gone = member.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease.ID))
    assert gone.TTL == -1


def test_chosen_id_duplicate_and_too_large(member):
    assert member.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30, ID=4242)).ID == 4242
    with pytest.raises(grpc.RpcError) as e:
        member.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30, ID=4242))
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists")
    with pytest.raises(grpc.RpcError) as e:
        member.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=9_000_000_001))
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")


def test_unknown_lease_answers(member):
    with pytest.raises(grpc.RpcError) as e:
        member.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=999))
    assert (e.value.code(), e.value.details()) == (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
    assert member.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=999)).TTL == -1
    ka = list(member.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=999)])))
    assert [(r.ID, r.TTL) for r in ka] == [(999, 0)]


def test_min_ttl_keepalive_and_expiry_deletes_keys(member):
    lease = member.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=1))
    assert lease.TTL == 2  # etcd's minimum: ceil(1.5 x election timeout) at default flags
    member.put(b"exp", b"v", lease=lease.ID)
    # keep it alive past its TTL
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        ka = list(member.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease.ID)])))
        assert ka[0].TTL == 2
        time.sleep(0.5)
    assert member.get(b"exp").kvs
    # then let it expire: the key goes, through a revoke proposal
    wait_until(lambda: not member.get(b"exp").kvs, 10, "the expired lease's key to be deleted")
    assert member.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease.ID)).TTL == -1
