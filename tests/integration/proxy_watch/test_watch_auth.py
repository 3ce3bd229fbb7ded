"""Watches through `kvproxy` with etcd auth on: each watch is opened upstream with its client's
token, watches are shared only between clients with the same token, and a watch the token may
not read is refused exactly as etcd refuses it."""

from __future__ import annotations

import asyncio
import os
import subprocess

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.etcd_ref import ETCDCTL_BIN

from .harness import WatchClient, metric_value


def etcdctl(endpoint: str, *args: str) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}, "ETCDCTL_API": "3"}
    p = subprocess.run([ETCDCTL_BIN, "--endpoints", endpoint, *args], capture_output=True, text=True,
                       timeout=30, env=env)
    assert p.returncode == 0, f"etcdctl {' '.join(args)}: {p.stderr}"


def enable_auth(endpoint: str) -> None:
    for args in (("user", "add", "root", "--new-user-password=rootpw"), ("role", "add", "root"),
                 ("user", "grant-role", "root", "root"),
                 ("user", "add", "alice", "--new-user-password=alicepw"), ("role", "add", "reader"),
                 ("role", "grant-permission", "reader", "read", "a"),
                 ("user", "grant-role", "alice", "reader"), ("auth", "enable")):
        etcdctl(endpoint, *args)


async def token(channel, name: str, password: str) -> tuple[tuple[str, str], ...]:
    resp = await rpc_pb2_grpc.AuthStub(channel).Authenticate(
        rpc_pb2.AuthenticateRequest(name=name, password=password))
    return (("token", resp.token),)


def test_watches_use_their_clients_token_and_are_shared_per_token(etcd1, proxy1):
    member = etcd1.members[0]
    enable_auth(etcd1.endpoints)

    async def run():
        async with grpc.aio.insecure_channel(proxy1.listen_addr) as pch, \
                grpc.aio.insecure_channel(etcd1.endpoints) as ech:
            alice = await token(ech, "alice", "alicepw")
            root = await token(ech, "root", "rootpw")
            before = metric_value(member.metrics_url, "etcd_debugging_mvcc_watcher_total")
            streams = {name: [WatchClient(pch, metadata=md), WatchClient(pch, metadata=md)]
                       for name, md in (("alice", alice), ("root", root))}
            for pair in streams.values():
                for w in pair:
                    w.create(b"a")
                    await w.created()
            upstream_watchers = metric_value(member.metrics_url, "etcd_debugging_mvcc_watcher_total") - before

            # Refused: alice may not read "b". Same answer through the proxy as from etcd.
            refused = []
            for ch in (ech, pch):
                w = WatchClient(ch, metadata=alice)
                w.create(b"b")
                refused.append(await w.read())
                w.close()

            kv = rpc_pb2_grpc.KVStub(ech)
            rev = (await kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"), metadata=root)).header.revision
            got = {name: [[e.kv.mod_revision for e in await w.events(1)] for w in pair]
                   for name, pair in streams.items()}
            for pair in streams.values():
                for w in pair:
                    w.close()
            return upstream_watchers, refused, got, rev

    upstream_watchers, (direct, proxied), got, rev = asyncio.run(run())
    assert upstream_watchers == 2, "one shared upstream watch per token"
    assert direct.canceled and direct.created and direct.cancel_reason.endswith("etcdserver: permission denied")
    assert (proxied.created, proxied.canceled, proxied.cancel_reason, proxied.watch_id) == \
        (direct.created, direct.canceled, direct.cancel_reason, direct.watch_id)
    assert got == {"alice": [[rev], [rev]], "root": [[rev], [rev]]}
