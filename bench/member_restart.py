"""How long a restarted member takes to answer its first Range, with N keys loaded.

Loads N keys (16 B keys, 100 B values) into a one-member `kvcluster` through Txns of 128 puts
(etcd's --max-txn-ops), stops it with SIGTERM, starts it again on the same data dir, and times
from the restart to the first successful serializable Range (the whole member: interpreter start,
imports, WAL replay, leader election, publish). Usage: `python -m bench.member_restart [N]`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time

import grpc

from cluster.launch import KVCLUSTER, ClusterSpec, ProcessGroup, port_open, wait_until
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

OPS_PER_TXN = 128
CONCURRENCY = 16


def txn_of(first: int, count: int) -> rpc_pb2.TxnRequest:
    value = b"v" * 100
    return rpc_pb2.TxnRequest(success=[
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k%015d" % i, value=value))
        for i in range(first, first + count)])


async def load(endpoint: str, n: int) -> None:
    """Put keys 0..n-1 with CONCURRENCY Txns in flight."""
    starts = iter(range(0, n, OPS_PER_TXN))
    async with grpc.aio.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)

        async def worker() -> None:
            for first in starts:
                await kv.Txn(txn_of(first, min(OPS_PER_TXN, n - first)), timeout=60)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def first_range_ok(endpoint: str) -> bool:
    try:
        with grpc.insecure_channel(endpoint) as ch:
            resp = rpc_pb2_grpc.KVStub(ch).Range(
                rpc_pb2.RangeRequest(key=b"k%015d" % 0, serializable=True), timeout=1)
        return len(resp.kvs) == 1
    except grpc.RpcError:
        return False


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spec = ClusterSpec.allocate(tmp, 1)
        member = spec.members[0]
        procs = ProcessGroup(os.path.join(tmp, "logs"))
        try:
            procs.start("member", [*KVCLUSTER, *spec.argv(member)])
            wait_until(lambda: first_range_ok(member.endpoint) or port_open(member.client_port), 60, "member")
            t0 = time.monotonic()
            asyncio.run(load(member.endpoint, n))
            load_s = time.monotonic() - t0
            procs.kill("member", signal.SIGTERM, wait=60)

            t0 = time.monotonic()
            procs.start("member", [*KVCLUSTER, *spec.argv(member)])
            wait_until(lambda: first_range_ok(member.endpoint), 120, "first Range after restart", interval=0.01)
            restart_s = time.monotonic() - t0
        finally:
            procs.close()
        print(f"keys loaded: {n:,} in {load_s:.1f} s ({n / load_s:,.0f} keys/s)")
        print(f"restart to first Range answered: {restart_s:.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
