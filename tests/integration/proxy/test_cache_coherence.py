"""The read cache against etcd 3.4.23: coherence with writes made elsewhere, read-your-writes,
caller identity, and revisions that never go backwards."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import grpc
import pytest

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.etcd_ref import ETCDCTL_BIN
from tests.support.kvstack import start_kvproxy
from cluster.launch import wait_until

from .conftest import kv_stub, metric, put

WRITES = 200


def test_direct_writes_are_served_within_100ms_p99(proxy1, etcd1):
    direct = etcd1.members[0].client_port
    put(direct, b"hot", b"0")
    req = rpc_pb2.RangeRequest(key=b"hot", serializable=True)
    lags = []
    with grpc.insecure_channel(f"127.0.0.1:{direct}") as dch, kv_stub(proxy1.port)[0] as pch:
        dkv, pkv = rpc_pb2_grpc.KVStub(dch), rpc_pb2_grpc.KVStub(pch)
        for i in range(1, WRITES + 1):
            assert pkv.Range(req, timeout=5).kvs[0].value == str(i - 1).encode()  # cached before the write
            dkv.Put(rpc_pb2.PutRequest(key=b"hot", value=str(i).encode()), timeout=5)
            acked = time.monotonic()
            while pkv.Range(req, timeout=5).kvs[0].value != str(i).encode():
                assert time.monotonic() - acked < 5, f"write {i} never served"
            lags.append(time.monotonic() - acked)
    lags.sort()
    p99 = lags[int(len(lags) * 0.99) - 1]
    print(f"\ncoherence lag over {WRITES} direct writes: p50 {lags[len(lags) // 2] * 1e3:.1f} ms, "
          f"p99 {p99 * 1e3:.1f} ms, max {lags[-1] * 1e3:.1f} ms")
    assert p99 < 0.100
    # The reads were mostly cache hits: the test measured the cache, not a pass-through (every
    # read before a write but the very first is a hit).
    assert metric(proxy1.metrics_url, "etcd_grpc_proxy_cache_hits_total") >= WRITES - 1


def test_read_your_writes_and_monotonic_revisions_through_the_proxy(proxy1):
    channel, kv = kv_stub(proxy1.port)
    last_rev = 0
    with channel:
        for i in range(100):
            key = b"ryw%d" % (i % 5)
            kv.Range(rpc_pb2.RangeRequest(key=key, serializable=True), timeout=5)  # cache it
            w = kv.Put(rpc_pb2.PutRequest(key=key, value=b"%d" % i), timeout=5)
            r = kv.Range(rpc_pb2.RangeRequest(key=key, serializable=True), timeout=5)
            assert r.kvs[0].value == b"%d" % i
            assert r.header.revision >= w.header.revision >= last_rev
            last_rev = r.header.revision
            prefix = kv.Range(rpc_pb2.RangeRequest(key=b"ryw", range_end=b"ryx", serializable=True), timeout=5)
            assert {kv_.key: kv_.value for kv_ in prefix.kvs}[key] == b"%d" % i


def etcdctl(port, *args, user=None):
    argv = [ETCDCTL_BIN, f"--endpoints=127.0.0.1:{port}", *args]
    if user:
        argv.insert(2, f"--user={user}")
    return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "ETCDCTL_API": "3"})


def test_with_auth_the_cache_never_answers_one_user_with_another_users_result(procs, etcd1):
    proxy = start_kvproxy(procs, etcd1, extra_flags=["--cache-user", "root:rootpw"])
    # Auth is still off: the cache's watch needs no token and is established anonymously.
    wait_until(lambda: metric(proxy.metrics_url, "kvproxy_cache_coherent") == 1, 10, "cache watch, auth off")
    # Users, roles and auth are set up *through the proxy* (Auth passthrough): root, alice (reads
    # secret and shared), bob (reads shared).
    for args in (["user", "add", "root:rootpw"], ["user", "grant-role", "root", "root"],
                 ["role", "add", "alice"], ["role", "grant-permission", "alice", "read", "secret"],
                 ["role", "grant-permission", "alice", "read", "shared"],
                 ["role", "add", "bob"], ["role", "grant-permission", "bob", "read", "shared"],
                 ["user", "add", "alice:pw"], ["user", "grant-role", "alice", "alice"],
                 ["user", "add", "bob:pw"], ["user", "grant-role", "bob", "bob"],
                 ["put", "secret", "s3cr3t"], ["put", "shared", "v1"], ["auth", "enable"]):
        done = etcdctl(proxy.port, *args)
        assert done.returncode == 0, (args, done.stderr)
    assert "root" in etcdctl(proxy.port, "user", "list", user="root:rootpw").stdout.split()
    url = proxy.metrics_url
    # The cache's watch, made as --cache-user, is (re)established once auth is on.
    wait_until(lambda: metric(url, "kvproxy_cache_coherent") == 1, 10, "cache watch under auth")
    channel, kv = kv_stub(proxy.port)
    with channel:
        auth = rpc_pb2_grpc.AuthStub(channel)  # Authenticate goes through the proxy too

        def token(name):
            resp = auth.Authenticate(rpc_pb2.AuthenticateRequest(name=name, password="pw"), timeout=5)
            return (("token", resp.token),)

        alice, bob = token("alice"), token("bob")

        def read(key, md):
            return kv.Range(rpc_pb2.RangeRequest(key=key, serializable=True), metadata=md, timeout=5)

        def misses():
            return metric(url, "etcd_grpc_proxy_cache_misses_total")

        assert read(b"secret", alice).kvs[0].value == b"s3cr3t"
        m0 = misses()
        assert read(b"secret", alice).kvs[0].value == b"s3cr3t"
        assert misses() == m0                       # alice hits her own cached answer
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as denied:
                read(b"secret", bob)                # ... which bob never gets
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert denied.value.details() == "etcdserver: permission denied"
        with pytest.raises(grpc.RpcError) as anon:
            read(b"secret", ())
        assert anon.value.details() == "etcdserver: user name is empty"

        assert read(b"shared", alice).kvs[0].value == b"v1"
        m1 = misses()
        assert read(b"shared", bob).kvs[0].value == b"v1"
        assert misses() == m1 + 1                   # bob's answer is fetched with bob's token
        read(b"shared", bob)
        assert misses() == m1 + 1                   # ... and then cached for bob

        # Coherent under auth: a write by root straight to the cluster reaches both users.
        assert etcdctl(etcd1.members[0].client_port, "put", "shared", "v2", user="root:rootpw").returncode == 0
        wait_until(lambda: read(b"shared", alice).kvs[0].value == b"v2", 5, "alice sees v2")
        wait_until(lambda: read(b"shared", bob).kvs[0].value == b"v2", 5, "bob sees v2")


def test_concurrent_direct_writes_and_cached_reads_never_go_backwards_nor_stay_stale(proxy1, etcd1):
    """Writers hammer 4 keys straight on the cluster while readers read them (and a range over
    them) through the proxy's cache. Per key, a read that began after another ended never sees an
    older mod revision; once the writes stop, every cached answer converges to the cluster's."""
    direct = etcd1.members[0].client_port
    keys = [b"race%d" % i for i in range(4)]
    reads = asyncio.run(_race(direct, proxy1.port, keys, seconds=3.0))
    assert len(reads) > 500
    for key in keys:
        mine = sorted((r for r in reads if r[2] == key), key=lambda r: r[0])
        ends = sorted((r[1], r[3]) for r in mine)  # (end, mod revision)
        best_ended, j = 0, 0
        for start, _end, _key, rev in mine:
            while j < len(ends) and ends[j][0] < start:
                best_ended = max(best_ended, ends[j][1])
                j += 1
            assert rev >= best_ended, f"{key!r}: read starting at {start} saw {rev} after {best_ended}"
    channel, kv = kv_stub(proxy1.port)
    with grpc.insecure_channel(f"127.0.0.1:{direct}") as dch, channel:
        truth = rpc_pb2_grpc.KVStub(dch).Range(rpc_pb2.RangeRequest(key=b"race", range_end=b"racf"), timeout=5)
        wait_until(lambda: kv.Range(rpc_pb2.RangeRequest(key=b"race", range_end=b"racf", serializable=True),
                                    timeout=5).kvs == truth.kvs, 2, "cached range converges")
        for kv_ in truth.kvs:
            got = kv.Range(rpc_pb2.RangeRequest(key=kv_.key, serializable=True), timeout=5).kvs
            assert got[0] == kv_


def test_header_revisions_never_go_backwards_on_one_connection_under_concurrent_writes(proxy1, etcd1):
    """The robustness tester's `serializable_sanity`: each reader, alone on its own connection,
    reads many keys (mostly cache hits on entries filled at different revisions) while writers
    change other keys, straight on the cluster and through the proxy. The header revisions one
    reader sees never decrease, and no answer holds a mod revision newer than its header."""
    keys = [b"mono%02d" % i for i in range(40)]
    seen = asyncio.run(_monotonic_readers(etcd1.members[0].client_port, proxy1.port, keys, seconds=3.0))
    total = sum(len(revs) for revs in seen)
    assert total > 500
    for n, revs in enumerate(seen):
        for i in range(1, len(revs)):
            assert revs[i][0] >= revs[i - 1][0], \
                f"reader {n}: header revision went back from {revs[i - 1][0]} to {revs[i][0]} ({revs[i][1]!r})"
        assert all(rev >= mod for rev, _k, mod in revs)
    assert len({rev for revs in seen for rev, _k, _m in revs}) > 10  # the writes were seen moving
    assert metric(proxy1.metrics_url, "etcd_grpc_proxy_cache_hits_total") > total // 4


async def _monotonic_readers(direct: int, proxy: int, keys, seconds: float, readers: int = 6):
    stop = time.monotonic() + seconds
    seen = [[] for _ in range(readers)]  # per reader: (header revision, key, max mod revision)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{direct}") as dch, \
            grpc.aio.insecure_channel(f"127.0.0.1:{proxy}") as wch:
        dkv, wkv = rpc_pb2_grpc.KVStub(dch), rpc_pb2_grpc.KVStub(wch)
        for k in keys:
            await dkv.Put(rpc_pb2.PutRequest(key=k, value=b"0"), timeout=5)

        async def writer(n, kv):
            i = 0
            while time.monotonic() < stop:
                i += 1
                # Few keys written, so that most reads hit entries filled at older revisions.
                await kv.Put(rpc_pb2.PutRequest(key=keys[(i * 7 + n) % 5], value=b"%d-%d" % (n, i)), timeout=5)
                await asyncio.sleep(0.002)

        async def reader(n):
            # Its own connection (a separate channel: grpc shares subchannels between channels
            # with equal arguments, so make it unique).
            opts = [("kvproxy-test-reader", n)]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy}", options=opts) as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                i = 0
                while time.monotonic() < stop:
                    i += 1
                    if i % 10 == 0:
                        req = rpc_pb2.RangeRequest(key=b"mono", range_end=b"monp", serializable=True)
                    else:
                        req = rpc_pb2.RangeRequest(key=keys[(i * 13 + n * 5) % len(keys)], serializable=True)
                    resp = await kv.Range(req, timeout=5)
                    seen[n].append((resp.header.revision, req.key,
                                    max((x.mod_revision for x in resp.kvs), default=0)))

        await asyncio.gather(writer(0, dkv), writer(1, dkv), writer(2, wkv),
                             *(reader(n) for n in range(readers)))
    return seen


async def _race(direct: int, proxy: int, keys, seconds: float):
    reads = []  # (start, end, key, mod_revision)
    stop = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(f"127.0.0.1:{direct}") as dch, \
            grpc.aio.insecure_channel(f"127.0.0.1:{proxy}") as pch:
        dkv, pkv = rpc_pb2_grpc.KVStub(dch), rpc_pb2_grpc.KVStub(pch)

        async def writer(n):
            i = 0
            while time.monotonic() < stop:
                i += 1
                await dkv.Put(rpc_pb2.PutRequest(key=keys[(i + n) % len(keys)], value=b"%d-%d" % (n, i)), timeout=5)

        async def reader(n):
            i = 0
            while time.monotonic() < stop:
                i += 1
                if i % 5 == 0:
                    start = time.monotonic()
                    resp = await pkv.Range(rpc_pb2.RangeRequest(key=b"race", range_end=b"racf", serializable=True),
                                           timeout=5)
                    end = time.monotonic()
                    reads.extend((start, end, kv_.key, kv_.mod_revision) for kv_ in resp.kvs)
                else:
                    key = keys[(i + n) % len(keys)]
                    start = time.monotonic()
                    resp = await pkv.Range(rpc_pb2.RangeRequest(key=key, serializable=True), timeout=5)
                    reads.append((start, time.monotonic(), key, resp.kvs[0].mod_revision if resp.kvs else 0))

        await asyncio.gather(*(writer(n) for n in range(3)), *(reader(n) for n in range(12)))
    return reads
