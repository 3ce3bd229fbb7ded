"""With --namespace, watches see only their namespace, with the prefix stripped from keys and
prev_kvs; a from-key watch ("\\0" range end) stays inside the namespace; lease TimeToLive keys too."""

from __future__ import annotations

import asyncio

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from .harness import WatchClient, in_process_proxy


def test_namespaced_watch_and_lease_keys(etcd1):
    async def run():
        async with in_process_proxy(etcd1.endpoints, namespace=b"ns/") as addr, \
                grpc.aio.insecure_channel(addr) as pch, grpc.aio.insecure_channel(etcd1.endpoints) as ech:
            kv = rpc_pb2_grpc.KVStub(ech)
            w = WatchClient(pch)
            w.create(b"a", prev_kv=True, watch_id=1)
            w.create(b"", range_end=b"\0", watch_id=2)   # every key of the namespace
            for _ in range(2):
                await w.created()
            await kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"outside"))
            await kv.Put(rpc_pb2.PutRequest(key=b"ns/a", value=b"1"))
            await kv.Put(rpc_pb2.PutRequest(key=b"ns/a", value=b"2"))
            await kv.Put(rpc_pb2.PutRequest(key=b"nt", value=b"past the namespace"))
            await kv.Put(rpc_pb2.PutRequest(key=b"ns/z", value=b"3"))
            seen: dict[int, list] = {1: [], 2: []}
            while len(seen[1]) < 2 or len(seen[2]) < 3:
                resp = await w.read()
                seen[resp.watch_id].extend(
                    (e.kv.key, e.kv.value, e.prev_kv.key, e.prev_kv.value) for e in resp.events)

            lease = rpc_pb2_grpc.LeaseStub(pch)
            grant = await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60))
            await kv.Put(rpc_pb2.PutRequest(key=b"ns/leased", value=b"v", lease=grant.ID))
            await kv.Put(rpc_pb2.PutRequest(key=b"other", value=b"v", lease=grant.ID))
            ttl = await lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=grant.ID, keys=True))
            w.close()
            return seen, list(ttl.keys)

    seen, keys = asyncio.run(run())
    assert seen[1] == [(b"a", b"1", b"", b""), (b"a", b"2", b"a", b"1")]
    assert [k for k, *_ in seen[2]] == [b"a", b"a", b"z"]
    assert keys == [b"leased"]
