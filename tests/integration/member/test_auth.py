"""etcd auth on one real member: tokens (expiry, forgery, revocation), permission checks of every
kind of request, and bad input, with etcd 3.4's error codes and texts."""

from __future__ import annotations


import grpc
import pytest

from cluster.launch import ClusterSpec, wait_until
from protos.authpb import auth_pb2
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from tests.support.watch_stream import WatchStream

from .conftest import MemberClient, start_member

READ, WRITE, READWRITE = auth_pb2.Permission.READ, auth_pb2.Permission.WRITE, auth_pb2.Permission.READWRITE
DENIED = (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied")
INVALID_TOKEN = (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
AUTH_FAILED = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password")


def error_of(call, *args, **kw) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kw)
    return info.value.code(), info.value.details()


def setup_users(auth: rpc_pb2_grpc.AuthStub) -> None:
    """root; alice reads and writes pub/ and reads the single key k; bob reads and writes priv/."""
    auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"), timeout=30)
    auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
    for user, role, perms in (("alice", "pub", [(READWRITE, b"pub/", b"pub0"), (READ, b"k", b"")]),
                              ("bob", "priv", [(READWRITE, b"priv/", b"priv0")])):
        auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=user, password=user + "pw"), timeout=30)
        auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name=role), timeout=10)
        for kind, key, end in perms:
            auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(
                name=role, perm=auth_pb2.Permission(permType=kind, key=key, range_end=end)), timeout=10)
        auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user=user, role=role), timeout=10)
    auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=10)


def token(auth: rpc_pb2_grpc.AuthStub, name: str, password: str | None = None) -> tuple[tuple[str, str], ...]:
    resp = auth.Authenticate(rpc_pb2.AuthenticateRequest(name=name, password=password or name + "pw"), timeout=30)
    return (("token", resp.token),)


def start(procs, tmp_path, *flags: str) -> MemberClient:
    return start_member(procs, ClusterSpec.allocate(str(tmp_path), 1), extra_flags=list(flags))


@pytest.fixture
def authed(procs, tmp_path):
    client = start(procs, tmp_path)
    setup_users(rpc_pb2_grpc.AuthStub(client.channel))
    yield client
    client.channel.close()


def test_permissions_of_every_request_kind(authed):
    auth, kv = rpc_pb2_grpc.AuthStub(authed.channel), authed.kv
    root, alice = token(auth, "root", "rootpw"), token(auth, "alice")
    kv.Put(rpc_pb2.PutRequest(key=b"priv/x", value=b"secret"), metadata=root, timeout=10)
    kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"kv"), metadata=root, timeout=10)

    # no token at all: etcd's "user name is empty", for reads and writes
    assert error_of(kv.Range, rpc_pb2.RangeRequest(key=b"pub/a"), timeout=10) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty")
    assert error_of(kv.Put, rpc_pb2.PutRequest(key=b"pub/a"), timeout=10)[1] == "etcdserver: user name is empty"

    kv.Put(rpc_pb2.PutRequest(key=b"pub/a", value=b"1"), metadata=alice, timeout=10)
    assert kv.Range(rpc_pb2.RangeRequest(key=b"pub/", range_end=b"pub0"), metadata=alice, timeout=10).count == 1
    assert kv.Range(rpc_pb2.RangeRequest(key=b"k", serializable=True), metadata=alice, timeout=10).count == 1
    assert error_of(kv.Put, rpc_pb2.PutRequest(key=b"k", value=b"x"), metadata=alice, timeout=10) == DENIED
    assert error_of(kv.Range, rpc_pb2.RangeRequest(key=b"priv/x"), metadata=alice, timeout=10) == DENIED
    # a range wider than the permission is refused, even if the extra part holds nothing
    assert error_of(kv.Range, rpc_pb2.RangeRequest(key=b"pub/", range_end=b"pub1"), metadata=alice, timeout=10) == DENIED
    assert error_of(kv.Range, rpc_pb2.RangeRequest(key=b"pub/", range_end=b"\0"), metadata=alice, timeout=10) == DENIED
    assert error_of(kv.DeleteRange, rpc_pb2.DeleteRangeRequest(key=b"priv/x"), metadata=alice, timeout=10) == DENIED

    # txn: compares, both branches and nested txns are all checked
    def txn(compare_key: bytes, put_key: bytes, nested: bool = False) -> rpc_pb2.TxnRequest:
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=put_key, value=b"t"))
        if nested:
            put = rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[put]))
        return rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=compare_key, target=rpc_pb2.Compare.VERSION, version=0)],
            success=[put], failure=[])
    assert kv.Txn(txn(b"pub/a", b"pub/t"), metadata=alice, timeout=10).succeeded is False
    assert error_of(kv.Txn, txn(b"priv/x", b"pub/t"), metadata=alice, timeout=10) == DENIED
    assert error_of(kv.Txn, txn(b"pub/a", b"priv/t"), metadata=alice, timeout=10) == DENIED
    assert error_of(kv.Txn, txn(b"pub/a", b"priv/t", nested=True), metadata=alice, timeout=10) == DENIED
    read_only = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"priv/x"))])
    assert error_of(kv.Txn, read_only, metadata=alice, timeout=10) == DENIED
    assert kv.Range(rpc_pb2.RangeRequest(key=b"priv/t"), metadata=root, timeout=10).count == 0

    # LeaseRevoke needs write permission on every key attached to the lease
    lease = authed.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=600), metadata=root, timeout=10).ID
    kv.Put(rpc_pb2.PutRequest(key=b"priv/leased", lease=lease), metadata=root, timeout=10)
    assert error_of(authed.lease.LeaseRevoke, rpc_pb2.LeaseRevokeRequest(ID=lease), metadata=alice, timeout=10) == DENIED
    # ... and a lease holding such a key cannot be attached to alice's key either
    assert error_of(kv.Put, rpc_pb2.PutRequest(key=b"pub/l", lease=lease), metadata=alice, timeout=10) == DENIED
    authed.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lease), metadata=root, timeout=10)

    # admin RPCs need the root role
    assert error_of(auth.UserList, rpc_pb2.AuthUserListRequest(), metadata=alice, timeout=10) == DENIED
    assert error_of(authed.maintenance.Defragment, rpc_pb2.DefragmentRequest(), metadata=alice, timeout=10) == (
        grpc.StatusCode.UNKNOWN, "auth: permission denied")
    assert error_of(authed.cluster.MemberRemove, rpc_pb2.MemberRemoveRequest(ID=1), metadata=alice, timeout=10) == DENIED
    assert auth.UserGet(rpc_pb2.AuthUserGetRequest(name="alice"), metadata=alice, timeout=10).roles == ["pub"]
    assert list(auth.UserList(rpc_pb2.AuthUserListRequest(), metadata=root, timeout=10).users) == ["alice", "bob", "root"]

    # watch: a refused create is answered as etcd, and the stream keeps serving the others
    ws = WatchStream(authed.watch, alice)
    try:
        refused = ws.create(b"priv/", range_end=b"priv0", watch_id=5)
        assert (refused.watch_id, refused.created, refused.canceled) == (-1, True, True)  # as etcd 3.4.23
        assert refused.cancel_reason == "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        ok = ws.create(b"pub/", range_end=b"pub0")
        assert ok.created and not ok.canceled
        kv.Put(rpc_pb2.PutRequest(key=b"priv/y", value=b"no"), metadata=root, timeout=10)
        kv.Put(rpc_pb2.PutRequest(key=b"pub/w", value=b"yes"), metadata=root, timeout=10)
        event = ws.recv()
        assert [(e.kv.key, e.kv.value) for e in event.events] == [(b"pub/w", b"yes")]
    finally:
        ws.close()


def test_revoking_a_role_or_changing_a_password_applies_to_existing_tokens(authed):
    auth, kv = rpc_pb2_grpc.AuthStub(authed.channel), authed.kv
    root, alice, bob = token(auth, "root", "rootpw"), token(auth, "alice"), token(auth, "bob")
    kv.Put(rpc_pb2.PutRequest(key=b"pub/a", value=b"1"), metadata=alice, timeout=10)
    auth.UserRevokeRole(rpc_pb2.AuthUserRevokeRoleRequest(name="alice", role="pub"), metadata=root, timeout=10)
    assert error_of(kv.Range, rpc_pb2.RangeRequest(key=b"pub/a"), metadata=alice, timeout=10) == DENIED
    assert error_of(kv.Put, rpc_pb2.PutRequest(key=b"pub/a"), metadata=alice, timeout=10) == DENIED

    kv.Put(rpc_pb2.PutRequest(key=b"priv/a", value=b"1"), metadata=bob, timeout=10)
    auth.UserChangePassword(rpc_pb2.AuthUserChangePasswordRequest(name="bob", password="new"), metadata=root, timeout=30)
    assert error_of(kv.Range, rpc_pb2.RangeRequest(key=b"priv/a"), metadata=bob, timeout=10) == INVALID_TOKEN
    assert error_of(token, auth, "bob") == AUTH_FAILED
    assert kv.Range(rpc_pb2.RangeRequest(key=b"priv/a"), metadata=token(auth, "bob", "new"), timeout=10).count == 1

    # deleting a user drops its tokens too; a role permission revoked applies at once
    auth.UserDelete(rpc_pb2.AuthUserDeleteRequest(name="alice"), metadata=root, timeout=10)
    assert error_of(kv.Range, rpc_pb2.RangeRequest(key=b"k"), metadata=alice, timeout=10) == INVALID_TOKEN
    bob = token(auth, "bob", "new")
    auth.RoleRevokePermission(rpc_pb2.AuthRoleRevokePermissionRequest(role="priv", key=b"priv/", range_end=b"priv0"),
                              metadata=root, timeout=10)
    assert error_of(kv.Range, rpc_pb2.RangeRequest(key=b"priv/a"), metadata=bob, timeout=10) == DENIED


def test_bad_input_gets_etcds_errors(authed):
    auth, kv = rpc_pb2_grpc.AuthStub(authed.channel), authed.kv
    root = token(auth, "root", "rootpw")
    assert error_of(token, auth, "alice", "wrong") == AUTH_FAILED
    assert error_of(token, auth, "nobody", "x") == AUTH_FAILED
    assert error_of(token, auth, "", "") == AUTH_FAILED
    forged = (("token", "AAAAAAAAAAAAAAAA.12"),)
    assert error_of(kv.Range, rpc_pb2.RangeRequest(key=b"pub/a"), metadata=forged, timeout=10) == INVALID_TOKEN
    assert error_of(kv.Put, rpc_pb2.PutRequest(key=b"pub/a"), metadata=(("authorization", "garbage"),),
                    timeout=10) == INVALID_TOKEN
    # a forged token on a watch stream: the create is refused, the stream stays usable
    ws = WatchStream(authed.watch, forged)
    try:
        assert ws.create(b"pub/a").canceled
    finally:
        ws.close()

    assert error_of(auth.UserAdd, rpc_pb2.AuthUserAddRequest(name="", password="x"), metadata=root, timeout=30) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty")
    assert error_of(auth.UserAdd, rpc_pb2.AuthUserAddRequest(name="alice", password="x"), metadata=root, timeout=30) == (
        grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: user name already exists")
    assert error_of(auth.UserGet, rpc_pb2.AuthUserGetRequest(name="nobody"), metadata=root, timeout=10) == (
        grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: user name not found")
    assert error_of(auth.RoleGet, rpc_pb2.AuthRoleGetRequest(role="nothing"), metadata=root, timeout=10) == (
        grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: role name not found")
    assert error_of(auth.RoleAdd, rpc_pb2.AuthRoleAddRequest(name=""), metadata=root, timeout=10) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: role name is empty")

    # very long names: stored and usable up to the request size limit, refused beyond it
    long_name = "u" * 100_000
    auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=long_name, password="pw"), metadata=root, timeout=30)
    auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="r" * 100_000), metadata=root, timeout=10)
    auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user=long_name, role="r" * 100_000), metadata=root, timeout=10)
    long_token = token(auth, long_name, "pw")
    assert error_of(kv.Range, rpc_pb2.RangeRequest(key=b"pub/a"), metadata=long_token, timeout=10) == DENIED
    assert error_of(auth.UserAdd, rpc_pb2.AuthUserAddRequest(name="x" * 2_000_000, password="pw"),
                    metadata=root, timeout=30) == (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
    assert error_of(token, auth, "y" * 1_000_000, "pw") == AUTH_FAILED
    # the member is still fine
    assert kv.Range(rpc_pb2.RangeRequest(key=b"pub/a"), metadata=token(auth, "alice"), timeout=10).count == 0


def test_simple_tokens_expire_after_the_ttl(procs, tmp_path):
    client = start(procs, tmp_path, "--auth-token-ttl", "2")
    auth = rpc_pb2_grpc.AuthStub(client.channel)
    setup_users(auth)
    alice = token(auth, "alice")
    assert client.kv.Range(rpc_pb2.RangeRequest(key=b"pub/a"), metadata=alice, timeout=10).count == 0

    def expired() -> bool:
        try:
            client.kv.Range(rpc_pb2.RangeRequest(key=b"pub/a"), metadata=alice, timeout=10)
            return False
        except grpc.RpcError as exc:
            assert (exc.code(), exc.details()) == INVALID_TOKEN
            return True
    # each use restarts the TTL (as etcd), so poll no faster than the TTL
    wait_until(expired, 30, "alice's token expired", interval=2.5)
    client.channel.close()


def test_jwt_tokens_carry_the_auth_revision(procs, tmp_path):
    secret = tmp_path / "jwt.key"
    secret.write_bytes(b"0123456789abcdef0123456789abcdef")
    client = start(procs, tmp_path, "--auth-token", f"jwt,priv-key={secret},sign-method=HS256,ttl=10m")
    auth = rpc_pb2_grpc.AuthStub(client.channel)
    setup_users(auth)
    root, alice = token(auth, "root", "rootpw"), token(auth, "alice")
    assert alice[0][1].count(".") == 2  # header.claims.signature
    client.kv.Put(rpc_pb2.PutRequest(key=b"pub/a", value=b"1"), metadata=alice, timeout=10)
    tampered = (("token", alice[0][1][:-2] + ("AA" if not alice[0][1].endswith("AA") else "BB")),)
    assert error_of(client.kv.Range, rpc_pb2.RangeRequest(key=b"pub/a"), metadata=tampered, timeout=10) == INVALID_TOKEN
    # any auth change makes tokens issued before it stale: they cannot be revoked otherwise
    auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="another"), metadata=root, timeout=10)
    assert error_of(client.kv.Range, rpc_pb2.RangeRequest(key=b"pub/a"), metadata=alice, timeout=10) == (
        grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")
    assert client.kv.Range(rpc_pb2.RangeRequest(key=b"pub/a"), metadata=token(auth, "alice"), timeout=10).count == 1
    client.channel.close()
