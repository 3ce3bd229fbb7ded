"""etcdserverpb.Auth on the member.

Changes (enable, disable, user/role add, delete, grant, revoke, password) are proposed through
the log and applied by AuthStore on every member; the entry's header (the caller, gate.py)
decides at apply time whether the caller may (root role when auth is on). Passwords are hashed
here, on a worker thread, and only the hash is proposed (AuthUserAddRequest.hashedPassword, as
etcd 3.5). Authenticate checks the password here, then proposes an AuthenticateEntry so that
every member registers the token; if the auth revision moved between the check and the apply it
checks again (etcd's loop). UserGet/UserList/RoleGet/RoleList are served from the local state
after the read barrier, with the checks etcd makes when it applies them.
"""

from __future__ import annotations

import asyncio

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from protos.kvpb import internal_pb2

from .. import errors
from ..errors import EtcdError
from . import gate
from .passwords import check_credentials, hash_password
from .store import AuthStore


class AuthService(rpc_pb2_grpc.AuthServicer):
    """The Auth service of one member."""

    def __init__(self, auth: AuthStore, log, proposer, headers):
        self._auth = auth
        self._log = log
        self._proposer = proposer
        self._headers = headers

    async def _propose(self, context, **request):
        try:
            resp = await self._proposer.propose(**request)
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        self._headers.fill(resp.header)
        return resp

    async def AuthEnable(self, request, context):
        return await self._propose(context, auth_enable=request)

    async def AuthDisable(self, request, context):
        return await self._propose(context, auth_disable=request)

    async def Authenticate(self, request: rpc_pb2.AuthenticateRequest, context):
        loop = asyncio.get_running_loop()
        try:
            await self._log.read_barrier()
            while True:
                state = self._auth.state
                if not state.enabled:
                    raise errors.AUTH_NOT_ENABLED
                user = state.users.get(request.name)
                stored = None if user is None or user.options.no_password else user.password
                if not await loop.run_in_executor(None, check_credentials, stored, request.password):
                    raise errors.AUTH_FAILED  # the KDF ran either way (passwords.py)
                entry = internal_pb2.AuthenticateEntry(
                    name=request.name, simple_token_prefix=self._auth.tokens.gen_prefix())
                resp = await self._proposer.propose(authenticate=entry)
                if state.revision == self._auth.state.revision:
                    break
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        self._headers.fill(resp.header)
        return resp

    async def UserAdd(self, request: rpc_pb2.AuthUserAddRequest, context):
        if not request.options.no_password:
            hashed = await asyncio.get_running_loop().run_in_executor(None, hash_password, request.password)
            request = rpc_pb2.AuthUserAddRequest(name=request.name, options=request.options,
                                                 hashedPassword=hashed)
        else:
            request = rpc_pb2.AuthUserAddRequest(name=request.name, options=request.options)
        return await self._propose(context, auth_user_add=request)

    async def UserChangePassword(self, request: rpc_pb2.AuthUserChangePasswordRequest, context):
        hashed = await asyncio.get_running_loop().run_in_executor(None, hash_password, request.password)
        request = rpc_pb2.AuthUserChangePasswordRequest(name=request.name, hashedPassword=hashed)
        return await self._propose(context, auth_user_change_password=request)

    async def UserDelete(self, request, context):
        return await self._propose(context, auth_user_delete=request)

    async def UserGrantRole(self, request, context):
        return await self._propose(context, auth_user_grant_role=request)

    async def UserRevokeRole(self, request, context):
        return await self._propose(context, auth_user_revoke_role=request)

    async def RoleAdd(self, request, context):
        return await self._propose(context, auth_role_add=request)

    async def RoleDelete(self, request, context):
        return await self._propose(context, auth_role_delete=request)

    async def RoleGrantPermission(self, request, context):
        return await self._propose(context, auth_role_grant_permission=request)

    async def RoleRevokePermission(self, request, context):
        return await self._propose(context, auth_role_revoke_permission=request)

    # -- reads ---------------------------------------------------------------------------------
    async def _read(self, context, build):
        try:
            await self._log.read_barrier()
            info = gate.log_info()
            resp = build(self._auth.state, info)
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        self._headers.fill(resp.header)
        return resp

    async def UserGet(self, request: rpc_pb2.AuthUserGetRequest, context):
        def build(state, info):
            try:
                state.check_admin(info)
            except EtcdError:
                if request.name != info.username:
                    raise
            user = state.users.get(request.name)
            if user is None:
                raise errors.USER_NOT_FOUND
            return rpc_pb2.AuthUserGetResponse(roles=list(user.roles))
        return await self._read(context, build)

    async def UserList(self, request, context):
        def build(state, info):
            state.check_admin(info)
            return rpc_pb2.AuthUserListResponse(users=sorted(state.users, key=str.encode))
        return await self._read(context, build)

    async def RoleGet(self, request: rpc_pb2.AuthRoleGetRequest, context):
        def build(state, info):
            try:
                state.check_admin(info)
            except EtcdError:
                if not state.has_role(info.username, request.role):
                    raise
            role = state.roles.get(request.role)
            if role is None:
                raise errors.ROLE_NOT_FOUND
            return rpc_pb2.AuthRoleGetResponse(perm=list(role.keyPermission))
        return await self._read(context, build)

    async def RoleList(self, request, context):
        def build(state, info):
            state.check_admin(info)
            return rpc_pb2.AuthRoleListResponse(roles=sorted(state.roles, key=str.encode))
        return await self._read(context, build)
