"""Leases in a 3-member cluster: the leader's lessor alone expires them; keepalives and TTL
queries sent to a follower are forwarded to the leader; a leader killed with -9 costs no lease."""

from __future__ import annotations

import time

import grpc

from cluster.launch import wait_until
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

TTL = 5


class LeaseClient:
    """Lease and KV stubs on one member."""

    def __init__(self, member):
        self.channel = grpc.insecure_channel(member.endpoint)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)

    def keepalive(self, lease_id: int) -> int:
        """One keepalive on a fresh stream; the TTL answered."""
        resp = next(self.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]), timeout=10))
        return resp.TTL

    def ttl(self, lease_id: int) -> int:
        return self.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id), timeout=10).TTL

    def has(self, key: bytes) -> bool:
        return bool(self.kv.Range(rpc_pb2.RangeRequest(key=key), timeout=10).kvs)


def keep_alive_for(client: LeaseClient, lease_id: int, seconds: float, answers: list[int]) -> None:
    """A keepalive every second for `seconds`; failed calls (a leader just killed) are retried
    at once, as clientv3's keepalive loop does."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            answers.append(client.keepalive(lease_id))
        except grpc.RpcError:
            time.sleep(0.1)
            continue
        time.sleep(1.0)


def test_a_lease_kept_alive_through_a_follower_lives_and_expires_on_the_leader(kv3):
    leader = kv3.wait_leader()
    members = {m.name: m for m in kv3.spec.members}
    a_name, b_name = [n for n in members if n != leader]
    a, b = LeaseClient(members[a_name]), LeaseClient(members[b_name])

    lease_id = a.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=TTL), timeout=10).ID
    a.kv.Put(rpc_pb2.PutRequest(key=b"leased", value=b"v", lease=lease_id), timeout=10)

    # 3 x TTL of keepalives through follower B: the leader renews, the key stays.
    answers: list[int] = []
    keep_alive_for(b, lease_id, 3 * TTL, answers)
    assert answers and set(answers) == {TTL}, answers
    assert a.has(b"leased") and b.has(b"leased")
    # Follower A answers TimeToLive with the leader's remaining TTL, which B's keepalives renewed
    # (A's own lessor saw no keepalive for 3 x TTL).
    assert b.keepalive(lease_id) == TTL
    assert TTL - 2 <= a.ttl(lease_id) <= TTL

    # kill -9 the leader while B keeps the lease alive: the new leader restarts it at full TTL.
    kv3.kill(leader)
    answers.clear()
    keep_alive_for(b, lease_id, 2 * TTL, answers)
    new_leader = kv3.wait_leader([a_name, b_name])
    assert new_leader in (a_name, b_name)
    assert answers and answers[-1] == TTL, answers
    assert a.has(b"leased") and b.has(b"leased")
    assert a.ttl(lease_id) > 0

    # Keepalives stop: the leader revokes the lease within TTL + slack, on every member.
    stopped = time.monotonic()
    wait_until(lambda: not a.has(b"leased") and not b.has(b"leased"), TTL + 5, "the lease's key deleted")
    assert time.monotonic() - stopped >= TTL - 2  # not revoked early either
    assert a.ttl(lease_id) == -1 and b.keepalive(lease_id) == 0
    a.channel.close()
    b.channel.close()
