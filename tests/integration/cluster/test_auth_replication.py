"""Auth state on a 3-member kvcluster: replicated through the log, identical on every member,
tokens usable on any member, and kept by restarts and by snapshot catch-up (the auth records live
in the store's LMDB environment, so a leader's store image carries them)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from cluster.launch import wait_until
from protos.authpb import auth_pb2
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.kvstack import start_kv_cluster

from .cluster_client import ClusterView
from .test_snapshot_catchup import PUTS, metric

READWRITE = auth_pb2.Permission.READWRITE


def auth_stub(view: ClusterView, name: str) -> rpc_pb2_grpc.AuthStub:
    return rpc_pb2_grpc.AuthStub(view.clients[name].channel)


def token(view: ClusterView, name: str, user: str, password: str):
    resp = auth_stub(view, name).Authenticate(rpc_pb2.AuthenticateRequest(name=user, password=password), timeout=30)
    return (("token", resp.token),)


def auth_state(view: ClusterView, name: str, root) -> tuple:
    """What member `name` says about users, their roles and the roles' permissions."""
    auth = auth_stub(view, name)
    users = list(auth.UserList(rpc_pb2.AuthUserListRequest(), metadata=root, timeout=10).users)
    roles = list(auth.RoleList(rpc_pb2.AuthRoleListRequest(), metadata=root, timeout=10).roles)
    return (
        [(u, list(auth.UserGet(rpc_pb2.AuthUserGetRequest(name=u), metadata=root, timeout=10).roles)) for u in users],
        [(r, [(p.permType, p.key, p.range_end) for p in
              auth.RoleGet(rpc_pb2.AuthRoleGetRequest(role=r), metadata=root, timeout=10).perm]) for r in roles],
    )


def add_user(auth: rpc_pb2_grpc.AuthStub, user: str, role: str, prefix: bytes, root=None) -> None:
    md = root or ()
    auth.UserAdd(rpc_pb2.AuthUserAddRequest(name=user, password=user + "pw"), metadata=md, timeout=30)
    auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name=role), metadata=md, timeout=10)
    auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(name=role, perm=auth_pb2.Permission(
        permType=READWRITE, key=prefix, range_end=prefix[:-1] + bytes([prefix[-1] + 1]))), metadata=md, timeout=10)
    auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user=user, role=role), metadata=md, timeout=10)


def assert_identical(view: ClusterView, root) -> tuple:
    view.wait_converged(timeout=60)
    states = {name: auth_state(view, name, root) for name in view.clients}
    first = next(iter(states.values()))
    assert all(s == first for s in states.values()), states
    return first


def test_auth_state_is_replicated_and_survives_restart_and_snapshot_catchup(small_snapshots):
    view = small_snapshots
    leader = view.wait_leader()
    follower = next(n for n in view.clients if n != leader)
    other = next(n for n in view.clients if n not in (leader, follower))
    # set up through a follower: requests are proposed by whichever member receives them
    auth = auth_stub(view, follower)
    auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"), timeout=30)
    auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
    add_user(auth, "alice", "pub", b"pub/")
    auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=10)
    root = token(view, leader, "root", "rootpw")

    # a simple token issued by one member works on every member (the Authenticate entry is replicated)
    alice = token(view, other, "alice", "alicepw")
    view.clients[leader].kv.Put(rpc_pb2.PutRequest(key=b"pub/a", value=b"1"), metadata=alice, timeout=10)
    view.wait_converged(timeout=60)
    for name, client in view.clients.items():
        assert client.kv.Range(rpc_pb2.RangeRequest(key=b"pub/a", serializable=True), metadata=alice,
                               timeout=10).count == 1, name
        with pytest.raises(grpc.RpcError) as denied:
            client.kv.Put(rpc_pb2.PutRequest(key=b"other", value=b"x"), metadata=alice, timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    before = assert_identical(view, root)
    assert [u for u, _ in before[0]] == ["alice", "root"]

    # a follower down while auth changes and the log is compacted past it catches up by snapshot
    view.kill(follower)
    add_user(auth_stub(view, leader), "bob", "priv", b"priv/", root=root)
    kv = view.clients[leader].kv
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: kv.Put(rpc_pb2.PutRequest(key=b"pub/%05d" % i, value=b"v" * 100),
                                       metadata=root, timeout=10), range(PUTS)))
    view.restart(follower)
    wait_until(lambda: metric(view, follower, "etcd_network_snapshot_receive_success") >= 1,
               60, f"{follower} received a snapshot\n{view.procs.log_tail('kv-' + follower)}")
    root = token(view, leader, "root", "rootpw")  # root's token still works, refreshed anyway
    after = assert_identical(view, root)
    assert [u for u, _ in after[0]] == ["alice", "bob", "root"]
    bob = token(view, follower, "bob", "bobpw")  # authenticated against the installed snapshot
    view.clients[follower].kv.Put(rpc_pb2.PutRequest(key=b"priv/x", value=b"1"), metadata=bob, timeout=10)

    # every member restarts with auth on and the same users (tokens are not persisted, as etcd)
    for name in list(view.clients):
        view.kill(name)
    start_kv_cluster(view.procs, view.spec)
    view.wait_leader(timeout=30)
    with pytest.raises(grpc.RpcError) as no_user:
        view.clients[follower].kv.Range(rpc_pb2.RangeRequest(key=b"pub/a"), timeout=10)
    assert no_user.value.details() == "etcdserver: user name is empty"
    root = token(view, follower, "root", "rootpw")
    assert assert_identical(view, root) == after
