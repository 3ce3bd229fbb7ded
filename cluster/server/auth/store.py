"""`AuthStore`: the member's auth store. It applies the replicated auth requests and makes the
apply-time permission checks of writes, identically on every member.

Who calls what:
- Member: `load(store.auth_records())` at start and after installing a Raft snapshot.
- ApplyLoop (apply thread, log order): `handles(req)` / `apply(batch, req, index)` for the auth
  entries; `check_write(batch, req)` before applying a Put, DeleteRange, Txn or LeaseRevoke.
- Services (event loop): read `state` (an immutable AuthState) and `tokens`.

Persistence: every change is written into the apply batch (WriteBatch.auth_put/auth_delete), so
it commits atomically with the entry's applied index and travels with the store in snapshots.
Records: b"enabled" (1 byte), b"revision" (8 bytes big-endian), b"user/"+blake2b(name) and
b"role/"+blake2b(name) holding authpb.User / authpb.Role (names may be longer than an LMDB
key). A new AuthState is published as soon as an entry changed it (later entries of the same
batch must see it); the batch then commits it.

Apply semantics follow etcd 3.4 auth/store.go and etcdserver/apply_auth.go: admin requests need
the root role when auth is on (checked with the entry's header); every change increases the auth
revision by one (AuthEnable too); Authenticate registers the token on every member.
"""

from __future__ import annotations

import hashlib
import logging
import struct

from protos.authpb import auth_pb2
from protos.etcdserverpb import rpc_pb2
from protos.kvpb import internal_pb2

from .. import errors
from .state import ROOT_ROLE, ROOT_USER, AuthInfo, AuthState

log = logging.getLogger(__name__)

_REV = struct.Struct(">Q")
K_ENABLED, K_REVISION, P_USER, P_ROLE = b"enabled", b"revision", b"user/", b"role/"

ADMIN_KINDS = frozenset({
    "auth_enable", "auth_disable", "auth_user_add", "auth_user_delete", "auth_user_change_password",
    "auth_user_grant_role", "auth_user_revoke_role", "auth_role_add", "auth_role_delete",
    "auth_role_grant_permission", "auth_role_revoke_permission"})
AUTH_KINDS = ADMIN_KINDS | {"authenticate"}


def _name_key(prefix: bytes, name: str) -> bytes:
    return prefix + hashlib.blake2b(name.encode(), digest_size=16).digest()


class _Change:
    """A new AuthState being built from the current one, and the records it writes."""

    def __init__(self, state: AuthState):
        self.state = AuthState(state.enabled, state.revision, dict(state.users), dict(state.roles))
        self.puts: dict[bytes, bytes] = {}
        self.deletes: set[bytes] = set()

    def put_user(self, user: auth_pb2.User) -> None:
        name = user.name.decode()
        self.state.users[name] = user
        self._put(_name_key(P_USER, name), user.SerializeToString())

    def delete_user(self, name: str) -> None:
        del self.state.users[name]
        self._delete(_name_key(P_USER, name))

    def put_role(self, role: auth_pb2.Role) -> None:
        name = role.name.decode()
        self.state.roles[name] = role
        self._put(_name_key(P_ROLE, name), role.SerializeToString())

    def delete_role(self, name: str) -> None:
        del self.state.roles[name]
        self._delete(_name_key(P_ROLE, name))

    def _put(self, key: bytes, value: bytes) -> None:
        self.puts[key] = value
        self.deletes.discard(key)

    def _delete(self, key: bytes) -> None:
        self.puts.pop(key, None)
        self.deletes.add(key)

    def set_enabled(self, enabled: bool) -> None:
        self.state.enabled = enabled
        self.puts[K_ENABLED] = b"\x01" if enabled else b"\x00"

    def bump(self) -> None:
        self.state.revision += 1
        self.puts[K_REVISION] = _REV.pack(self.state.revision)


class AuthStore:
    """The auth store of one member (see the module docstring)."""

    def __init__(self, tokens):
        self.tokens = tokens  # tokens.SimpleTokens or tokens.JwtTokens
        self.state = AuthState()

    def load(self, records: list[tuple[bytes, bytes]]) -> None:
        state = AuthState()
        for key, value in records:
            if key == K_ENABLED:
                state.enabled = value == b"\x01"
            elif key == K_REVISION:
                state.revision = _REV.unpack(value)[0]
            elif key.startswith(P_USER):
                user = auth_pb2.User.FromString(value)
                state.users[user.name.decode()] = user
            elif key.startswith(P_ROLE):
                role = auth_pb2.Role.FromString(value)
                state.roles[role.name.decode()] = role
        self.state = state
        if state.enabled:
            self.tokens.enable()
        else:
            self.tokens.disable()

    # -- apply thread ------------------------------------------------------------------------------
    @staticmethod
    def handles(req: internal_pb2.InternalRequest) -> bool:
        return req.WhichOneof("request") in AUTH_KINDS

    def apply(self, batch, req: internal_pb2.InternalRequest, index: int):
        """Apply one auth entry; returns its response or raises errors.EtcdError."""
        kind = req.WhichOneof("request")
        state = self.state
        if kind in ADMIN_KINDS and req.HasField("header"):
            state.check_admin(AuthInfo(req.header.username, req.header.auth_revision))
        if kind == "authenticate":
            return self._authenticate(req.authenticate, index)
        change = _Change(state)
        resp = getattr(self, "_" + kind)(change, getattr(req, kind))
        if change.puts or change.deletes:
            for key, value in change.puts.items():
                batch.auth_put(key, value)
            for key in change.deletes:
                batch.auth_delete(key)
            self.state = change.state
        return resp

    def _authenticate(self, entry: internal_pb2.AuthenticateEntry, index: int):
        state = self.state
        if not state.enabled:
            raise errors.AUTH_NOT_ENABLED
        user = state.users.get(entry.name)
        if user is None or user.options.no_password:
            raise errors.AUTH_FAILED
        token = self.tokens.assign(entry.name, state.revision, entry.simple_token_prefix, index)
        return rpc_pb2.AuthenticateResponse(token=token)

    def _auth_enable(self, c: _Change, r):
        if c.state.enabled:
            return rpc_pb2.AuthEnableResponse()
        root = c.state.users.get(ROOT_USER)
        if root is None:
            raise errors.ROOT_USER_NOT_EXIST
        if ROOT_ROLE not in root.roles:
            raise errors.ROOT_ROLE_NOT_EXIST
        c.set_enabled(True)
        c.bump()
        self.tokens.enable()
        log.info("enabled authentication")
        return rpc_pb2.AuthEnableResponse()

    def _auth_disable(self, c: _Change, r):
        if c.state.enabled:
            c.set_enabled(False)
            c.bump()
            self.tokens.disable()
            log.info("disabled authentication")
        return rpc_pb2.AuthDisableResponse()

    def _auth_user_add(self, c: _Change, r: rpc_pb2.AuthUserAddRequest):
        if not r.name:
            raise errors.USER_EMPTY
        if r.name in c.state.users:
            raise errors.USER_ALREADY_EXIST
        user = auth_pb2.User(name=r.name.encode(), options=r.options)
        if not r.options.no_password:
            user.password = r.hashedPassword.encode()
        c.put_user(user)
        c.bump()
        return rpc_pb2.AuthUserAddResponse()

    def _auth_user_delete(self, c: _Change, r: rpc_pb2.AuthUserDeleteRequest):
        if c.state.enabled and r.name == ROOT_USER:
            raise errors.INVALID_AUTH_MGMT
        if r.name not in c.state.users:
            raise errors.USER_NOT_FOUND
        c.delete_user(r.name)
        c.bump()
        self.tokens.invalidate_user(r.name)
        return rpc_pb2.AuthUserDeleteResponse()

    def _auth_user_change_password(self, c: _Change, r: rpc_pb2.AuthUserChangePasswordRequest):
        old = c.state.users.get(r.name)
        if old is None:
            raise errors.USER_NOT_FOUND
        user = auth_pb2.User()
        user.CopyFrom(old)
        user.password = r.hashedPassword.encode()
        c.put_user(user)
        c.bump()
        self.tokens.invalidate_user(r.name)
        return rpc_pb2.AuthUserChangePasswordResponse()

    def _auth_user_grant_role(self, c: _Change, r: rpc_pb2.AuthUserGrantRoleRequest):
        old = c.state.users.get(r.user)
        if old is None:
            raise errors.USER_NOT_FOUND
        if r.role != ROOT_ROLE and r.role not in c.state.roles:
            raise errors.ROLE_NOT_FOUND
        if r.role in old.roles:
            return rpc_pb2.AuthUserGrantRoleResponse()
        user = auth_pb2.User()
        user.CopyFrom(old)
        roles = sorted([*old.roles, r.role])
        del user.roles[:]
        user.roles.extend(roles)
        c.put_user(user)
        c.bump()
        return rpc_pb2.AuthUserGrantRoleResponse()

    def _auth_user_revoke_role(self, c: _Change, r: rpc_pb2.AuthUserRevokeRoleRequest):
        if c.state.enabled and r.name == ROOT_USER and r.role == ROOT_ROLE:
            raise errors.INVALID_AUTH_MGMT
        old = c.state.users.get(r.name)
        if old is None:
            raise errors.USER_NOT_FOUND
        if r.role not in old.roles:
            raise errors.ROLE_NOT_GRANTED
        user = auth_pb2.User()
        user.CopyFrom(old)
        del user.roles[:]
        user.roles.extend(x for x in old.roles if x != r.role)
        c.put_user(user)
        c.bump()
        return rpc_pb2.AuthUserRevokeRoleResponse()

    def _auth_role_add(self, c: _Change, r: rpc_pb2.AuthRoleAddRequest):
        if not r.name:
            raise errors.ROLE_EMPTY
        if r.name in c.state.roles:
            raise errors.ROLE_ALREADY_EXIST
        c.put_role(auth_pb2.Role(name=r.name.encode()))
        c.bump()
        return rpc_pb2.AuthRoleAddResponse()

    def _auth_role_delete(self, c: _Change, r: rpc_pb2.AuthRoleDeleteRequest):
        if c.state.enabled and r.role == ROOT_ROLE:
            raise errors.INVALID_AUTH_MGMT
        if r.role not in c.state.roles:
            raise errors.ROLE_NOT_FOUND
        c.delete_role(r.role)
        for old in list(c.state.users.values()):
            if r.role in old.roles:
                user = auth_pb2.User()
                user.CopyFrom(old)
                del user.roles[:]
                user.roles.extend(x for x in old.roles if x != r.role)
                c.put_user(user)
        c.bump()
        return rpc_pb2.AuthRoleDeleteResponse()

    def _auth_role_grant_permission(self, c: _Change, r: rpc_pb2.AuthRoleGrantPermissionRequest):
        old = c.state.roles.get(r.name)
        if old is None:
            raise errors.ROLE_NOT_FOUND
        role = auth_pb2.Role()
        role.CopyFrom(old)
        for perm in role.keyPermission:
            if perm.key == r.perm.key and perm.range_end == r.perm.range_end:
                perm.permType = r.perm.permType
                break
        else:
            perms = sorted([*old.keyPermission, r.perm], key=lambda p: p.key)
            del role.keyPermission[:]
            role.keyPermission.extend(perms)
        c.put_role(role)
        c.bump()
        return rpc_pb2.AuthRoleGrantPermissionResponse()

    def _auth_role_revoke_permission(self, c: _Change, r: rpc_pb2.AuthRoleRevokePermissionRequest):
        old = c.state.roles.get(r.role)
        if old is None:
            raise errors.ROLE_NOT_FOUND
        kept = [p for p in old.keyPermission if p.key != r.key or p.range_end != r.range_end]
        if len(kept) == len(old.keyPermission):
            raise errors.PERMISSION_NOT_GRANTED
        role = auth_pb2.Role(name=old.name, keyPermission=kept)
        c.put_role(role)
        c.bump()
        return rpc_pb2.AuthRoleRevokePermissionResponse()

    # -- apply-time checks of writes (etcd's authApplierV3) ----------------------------------------
    def check_write(self, batch, req: internal_pb2.InternalRequest) -> None:
        """Raise errors.EtcdError if the entry's user may not make this write. Entries without a
        header were proposed by the member itself (lease expiry, compaction): not checked."""
        state = self.state
        if not state.enabled or not req.HasField("header"):
            return
        info = AuthInfo(req.header.username, req.header.auth_revision)
        kind = req.WhichOneof("request")
        if kind == "put":
            self._check_put(state, info, batch, req.put)
        elif kind == "delete_range":
            self._check_delete(state, info, req.delete_range)
        elif kind == "txn":
            check_txn(state, info, req.txn)
        elif kind == "lease_revoke":
            for key in batch.lease_keys(req.lease_revoke.ID):
                state.check_op(info, key, b"", write=True)

    @staticmethod
    def _check_put(state: AuthState, info: AuthInfo, batch, r: rpc_pb2.PutRequest) -> None:
        state.check_op(info, r.key, b"", write=True)
        if r.lease:
            # a lease already holding a key this user may not write cannot be attached (etcd)
            for key in batch.lease_keys(r.lease):
                state.check_op(info, key, b"", write=True)
        if r.prev_kv:
            state.check_op(info, r.key, b"", write=False)

    @staticmethod
    def _check_delete(state: AuthState, info: AuthInfo, r: rpc_pb2.DeleteRangeRequest) -> None:
        if r.prev_kv:
            state.check_op(info, r.key, r.range_end, write=False)
        state.check_op(info, r.key, r.range_end, write=True)



def check_txn(state: AuthState, info: AuthInfo, r: rpc_pb2.TxnRequest) -> None:
    """etcd's checkTxnAuth: every compare reads, every op as its kind; nested txns too (etcd
    3.4.23 does not descend into nested txns: we do)."""
    for cmp in r.compare:
        state.check_op(info, cmp.key, cmp.range_end, write=False)
    for op in (*r.success, *r.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range":
            state.check_op(info, op.request_range.key, op.request_range.range_end, write=False)
        elif kind == "request_put":
            state.check_op(info, op.request_put.key, b"", write=True)
        elif kind == "request_delete_range":
            AuthStore._check_delete(state, info, op.request_delete_range)
        elif kind == "request_txn":
            check_txn(state, info, op.request_txn)
