"""kvproxy in front of a kvcluster member with auth on: no data crosses identities through the
cache under concurrent load, and a watcher whose token expires is told so instead of hanging."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from cluster.launch import ClusterSpec, wait_until
from protos.authpb import auth_pb2
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.kvstack import start_kv_cluster, start_kvproxy
from tests.support.watch_stream import WatchStream, create_request

from .conftest import metric

READ, READWRITE = auth_pb2.Permission.READ, auth_pb2.Permission.READWRITE
DENIED_REASON = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"


def setup_auth(channel: grpc.Channel) -> None:
    """root; alice reads pub/, bob reads priv/."""
    auth = rpc_pb2_grpc.AuthStub(channel)
    for name in ("root", "alice", "bob"):
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=name, password=name + "pw"), timeout=30)
    auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
    for user, prefix in (("alice", b"pub/"), ("bob", b"priv/")):
        auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name=user + "-role"), timeout=10)
        auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(name=user + "-role", perm=auth_pb2.Permission(
            permType=READ, key=prefix, range_end=prefix[:-1] + b"0")), timeout=10)
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user=user, role=user + "-role"), timeout=10)
    kv = rpc_pb2_grpc.KVStub(channel)
    for i in range(20):
        kv.Put(rpc_pb2.PutRequest(key=b"pub/%02d" % i, value=b"alice-0"), timeout=10)
        kv.Put(rpc_pb2.PutRequest(key=b"priv/%02d" % i, value=b"bob-0"), timeout=10)
    auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=10)


def token(channel: grpc.Channel, name: str):
    resp = rpc_pb2_grpc.AuthStub(channel).Authenticate(
        rpc_pb2.AuthenticateRequest(name=name, password=name + "pw"), timeout=30)
    return (("token", resp.token),)


@pytest.fixture
def stack(procs, tmp_path, request):
    ttl = getattr(request, "param", 300)
    spec = start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path), 1), extra_flags=["--auth-token-ttl", str(ttl)])
    member = grpc.insecure_channel(spec.endpoints)
    setup_auth(member)
    proxy = start_kvproxy(procs, spec, extra_flags=["--cache-user", "root:rootpw"])
    through_proxy = grpc.insecure_channel(proxy.listen_addr)
    yield spec, proxy, member, through_proxy
    member.close()
    through_proxy.close()


def test_concurrent_users_never_see_each_others_data_through_the_cache(stack):
    spec, proxy, member, channel = stack
    wait_until(lambda: metric(proxy.metrics_url, "kvproxy_cache_coherent") == 1, 30, "cache watch under auth")
    kv = rpc_pb2_grpc.KVStub(channel)
    users = {"alice": (b"pub/", b"pub0", b"alice-"), "bob": (b"priv/", b"priv0", b"bob-")}
    tokens = {name: token(channel, name) for name in users}
    root = token(member, "root")
    stop = threading.Event()
    problems: list[str] = []
    served = {"alice": 0, "bob": 0}

    def reader(name: str) -> None:
        own_key, own_end, own_value = users[name]
        other = next(u for u in users if u != name)
        other_key, other_end, _ = users[other]
        md = tokens[name]
        while not stop.is_set():
            for key, end in ((own_key, own_end), (own_key + b"03", b"")):
                resp = kv.Range(rpc_pb2.RangeRequest(key=key, range_end=end, serializable=True), metadata=md, timeout=10)
                for item in resp.kvs:
                    if not (item.key.startswith(own_key) and item.value.startswith(own_value)):
                        problems.append(f"{name} got {item.key!r}={item.value!r}")
                served[name] += 1
            for key, end in ((other_key, other_end), (other_key + b"03", b"")):
                try:
                    resp = kv.Range(rpc_pb2.RangeRequest(key=key, range_end=end, serializable=True),
                                    metadata=md, timeout=10)
                    problems.append(f"{name} read {other}'s {key!r}: {list(resp.kvs)}")
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                        problems.append(f"{name}: {exc.code()} {exc.details()}")

    def writer() -> None:  # root rewrites both users' keys, so the cache keeps invalidating
        member_kv = rpc_pb2_grpc.KVStub(member)
        n = 0
        while not stop.is_set():
            n += 1
            member_kv.Put(rpc_pb2.PutRequest(key=b"pub/%02d" % (n % 20), value=b"alice-%d" % n), metadata=root, timeout=10)
            member_kv.Put(rpc_pb2.PutRequest(key=b"priv/%02d" % (n % 20), value=b"bob-%d" % n), metadata=root, timeout=10)

    hits_before = metric(proxy.metrics_url, "etcd_grpc_proxy_cache_hits_total")
    with ThreadPoolExecutor(9) as pool:
        futures = [pool.submit(reader, name) for name in ("alice", "bob") * 4] + [pool.submit(writer)]
        wait_until(lambda: min(served.values()) >= 200 or bool(problems) or any(f.done() for f in futures),
                   120, "both users served repeatedly")
        stop.set()
        for f in futures:
            f.result()
    assert not problems, problems[:10]
    assert min(served.values()) >= 200
    assert metric(proxy.metrics_url, "etcd_grpc_proxy_cache_hits_total") > hits_before, "the cache answered some reads"


def told_auth_failure(item) -> bool:
    """A watch response canceling with etcd's permission-denied reason, or the stream ending with
    the auth error."""
    if isinstance(item, rpc_pb2.WatchResponse):
        return item.canceled and item.cancel_reason == DENIED_REASON
    if isinstance(item, grpc.RpcError):
        return item.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    return False


@pytest.mark.parametrize("stack", [3], indirect=True)
def test_a_watcher_whose_token_expires_is_told_and_never_hangs(stack, procs):
    spec, proxy, member, channel = stack
    root = token(member, "root")
    alice = token(channel, "alice")
    member_kv = rpc_pb2_grpc.KVStub(member)
    watch = WatchStream(rpc_pb2_grpc.WatchStub(channel), alice)
    try:
        created = watch.create(b"pub/", range_end=b"pub0")
        assert created.created and not created.canceled
        member_kv.Put(rpc_pb2.PutRequest(key=b"pub/a", value=b"1"), metadata=root, timeout=10)
        event = watch.next()
        assert [e.kv.key for e in event.events] == [b"pub/a"]

        def expired() -> bool:  # each use restarts the 3 s TTL: poll every 4 s
            try:
                member_kv.Range(rpc_pb2.RangeRequest(key=b"pub/a"), metadata=alice, timeout=10)
                return False
            except grpc.RpcError as exc:
                return exc.code() == grpc.StatusCode.UNAUTHENTICATED
        wait_until(expired, 60, "alice's token expired", interval=4.0)

        # a new watch on the same stream with the expired token is refused, not left pending
        watch.send(create_request(b"pub/b"))
        assert told_auth_failure(watch.next()), "new watch with an expired token"

        # the member restarts (tokens are not persisted): the proxy re-opens its upstream watch
        # with alice's token, which the member refuses; alice's watcher is told, not left waiting
        procs.kill("kv-" + spec.members[0].name)
        start_kv_cluster(procs, spec, extra_flags=["--auth-token-ttl", "3"])
        member_kv.Put(rpc_pb2.PutRequest(key=b"pub/c", value=b"2"), metadata=token(member, "root"), timeout=30)
        while True:
            item = watch.next(timeout=60)
            if told_auth_failure(item):
                break
            assert isinstance(item, rpc_pb2.WatchResponse) and not item.canceled, item
            assert all(e.kv.key.startswith(b"pub/") for e in item.events)
    finally:
        watch.close()


def test_a_role_revoked_on_the_cluster_shows_through_the_cache(stack):
    spec, proxy, member, channel = stack
    wait_until(lambda: metric(proxy.metrics_url, "kvproxy_cache_coherent") == 1, 30, "cache watch under auth")
    kv = rpc_pb2_grpc.KVStub(channel)
    alice = token(channel, "alice")
    read = rpc_pb2.RangeRequest(key=b"pub/", range_end=b"pub0", serializable=True)
    hits = metric(proxy.metrics_url, "etcd_grpc_proxy_cache_hits_total")
    for _ in range(5):
        assert kv.Range(read, metadata=alice, timeout=10).count == 20
    assert metric(proxy.metrics_url, "etcd_grpc_proxy_cache_hits_total") > hits  # cached under alice's token
    rpc_pb2_grpc.AuthStub(member).UserRevokeRole(rpc_pb2.AuthUserRevokeRoleRequest(name="alice", role="alice-role"),
                                                 metadata=token(member, "root"), timeout=10)

    def refused() -> bool:
        try:
            kv.Range(read, metadata=alice, timeout=10)
            return False
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
            return True
    wait_until(refused, 10, "alice's cached read refused after the revocation")
    for _ in range(5):  # and it stays refused
        assert refused()
