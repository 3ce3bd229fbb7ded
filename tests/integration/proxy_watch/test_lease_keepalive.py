"""Lease keepalives through `kvproxy`: merged upstream, but never a longer life than the cluster gave.

etcd's grpc-proxy answers keepalives from a cache and keeps a lease alive up to 2xTTL after the
client's last keepalive (etcd#13031). Ours forwards them: after a client's last keepalive, the lease
expires within TTL (plus etcd's expiry check granularity), measured on etcd itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from .harness import metric_value

TTL = 3
# etcd's lessor checks expiries every 500 ms and revokes through raft; TimeToLive is polled every 50 ms.
EXPIRY_SLACK_S = 1.5


async def keepalive_once(stub: rpc_pb2_grpc.LeaseStub, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
    call = stub.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]))
    try:
        return await asyncio.wait_for(call.read(), 10)
    finally:
        call.cancel()


def test_keepalive_through_proxy_never_outlives_ttl(etcd1, proxy1):
    async def run():
        async with grpc.aio.insecure_channel(proxy1.listen_addr) as pch, \
                grpc.aio.insecure_channel(etcd1.endpoints) as ech:
            via_proxy, direct = rpc_pb2_grpc.LeaseStub(pch), rpc_pb2_grpc.LeaseStub(ech)
            grant = await via_proxy.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=TTL))
            await asyncio.sleep(1.5)  # let part of the TTL run out, so the keepalive visibly renews it
            resp = await keepalive_once(via_proxy, grant.ID)
            last_keepalive = time.monotonic()
            assert resp.ID == grant.ID and resp.TTL == TTL
            remaining = await direct.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=grant.ID))
            assert remaining.TTL >= TTL - 1, "the keepalive renewed the lease on the cluster"
            while True:
                ttl = await direct.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=grant.ID))
                if ttl.TTL == -1:
                    return time.monotonic() - last_keepalive
                assert time.monotonic() - last_keepalive < 2 * TTL, "lease outlived its TTL"
                await asyncio.sleep(0.05)

    life = asyncio.run(run())
    assert TTL - 1 <= life <= TTL + EXPIRY_SLACK_S, f"lease lived {life:.2f}s after the last keepalive"


def test_concurrent_keepalives_are_merged_and_truthful(etcd1, proxy1, procs):
    """Keepalives that arrive while one is upstream share the next upstream keepalive. To make
    "arrive while one is upstream" certain, etcd is paused (SIGSTOP) until all have arrived."""
    clients = 40
    etcd_pid = procs.procs["etcd-m1"].pid

    async def client_keepalives_seen() -> float:
        return await asyncio.to_thread(metric_value, proxy1.metrics_url, "kvproxy_lease_keepalives_client_total")

    async def run():
        async with grpc.aio.insecure_channel(proxy1.listen_addr) as pch:
            stub = rpc_pb2_grpc.LeaseStub(pch)
            grant = await stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30))
            before_client = await client_keepalives_seen()
            before_upstream = metric_value(proxy1.metrics_url, "kvproxy_lease_keepalives_upstream_total")
            for round_no in range(3):
                os.kill(etcd_pid, signal.SIGSTOP)
                try:
                    pending = [asyncio.create_task(keepalive_once(stub, grant.ID)) for _ in range(clients)]
                    target = before_client + (round_no + 1) * clients
                    deadline = time.monotonic() + 10
                    while await client_keepalives_seen() < target:
                        assert time.monotonic() < deadline, "client keepalives did not all reach the proxy"
                        await asyncio.sleep(0.02)
                finally:
                    os.kill(etcd_pid, signal.SIGCONT)
                answers = await asyncio.gather(*pending)
                assert all(a.ID == grant.ID and 0 < a.TTL <= 30 for a in answers)
            sent_client = await client_keepalives_seen() - before_client
            sent_upstream = metric_value(proxy1.metrics_url, "kvproxy_lease_keepalives_upstream_total") - before_upstream
            await stub.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=grant.ID))
            gone = await keepalive_once(stub, grant.ID)
            return sent_client, sent_upstream, gone

    sent_client, sent_upstream, gone = asyncio.run(run())
    assert sent_client == 3 * clients
    assert sent_upstream < sent_client / 2, f"{sent_upstream} upstream keepalives for {sent_client}"
    assert gone.TTL == 0, "a revoked lease's keepalive answers TTL 0, as etcd does"
