"""Who is calling: the identity of each client RPC, and the permission checks services make.

`AuthGate.wrap` (applied to every handler at registration, cluster/grpc_wrapping.py) makes each
RPC run with a `RequestAuth` in the context variable `_current`; tasks the handler creates
(a watch stream's reader) inherit it. The module functions below read that variable, so service
code calls e.g. `gate.check_range(key, range_end)` without passing contexts around; outside an
RPC (the member's own proposals: lease expiry, compaction, publish) there is no RequestAuth and
the functions do nothing.

Identity (etcd 3.4 EtcdServer.AuthInfoFromCtx), resolved at every check (not remembered: a watch
stream's token may expire between two create requests, and etcd checks each create anew):
1. the metadata `token` (else `authorization`): a token the provider does not know or that has
   expired -> "etcdserver: invalid auth token" (also when auth is off, as etcd);
2. no token and the member runs with --client-cert-auth: the CN of the verified client
   certificate (grpc's auth context `x509_common_name`), at the current auth revision;
3. otherwise nobody (None): checks then run with an empty AuthInfo (etcd: "user name is empty"
   when auth is on).
The wrapper also makes the root-only checks of the RPCs that are not replicated
(Maintenance Defragment/Snapshot/Hash/HashKV, Cluster membership changes), as etcd's
authMaintenanceServer and checkMembershipOperationPermission do.
"""

from __future__ import annotations

import contextlib
import contextvars

import grpc

from protos.etcdserverpb import rpc_pb2
from protos.kvpb import internal_pb2

from .. import errors
from .state import AuthInfo
from .store import AuthStore, check_txn

TOKEN_KEYS = ("token", "authorization")
ADMIN_METHODS = frozenset({
    "/etcdserverpb.Maintenance/Defragment", "/etcdserverpb.Maintenance/Snapshot",
    "/etcdserverpb.Maintenance/Hash", "/etcdserverpb.Maintenance/HashKV",
    "/etcdserverpb.Cluster/MemberAdd", "/etcdserverpb.Cluster/MemberRemove",
    "/etcdserverpb.Cluster/MemberUpdate", "/etcdserverpb.Cluster/MemberPromote"})

# etcd 3.4's authMaintenanceServer returns the auth package's own errors, not their gRPC forms:
# clients see code Unknown and the "auth: ..." text (checked against etcd 3.4.23).
_MAINTENANCE_TEXT = {
    errors.USER_EMPTY.message: "auth: user name is empty",
    errors.USER_NOT_FOUND.message: "auth: user not found",
    errors.PERMISSION_DENIED.message: "auth: permission denied",
    errors.INVALID_AUTH_TOKEN.message: "auth: invalid auth token",
}


def _as_maintenance_error(exc: errors.EtcdError) -> errors.EtcdError:
    text = _MAINTENANCE_TEXT.get(exc.message)
    return exc if text is None else errors.EtcdError(grpc.StatusCode.UNKNOWN, text)


class RequestAuth:
    """The caller of one RPC."""

    def __init__(self, store: AuthStore, context: grpc.aio.ServicerContext, client_cert_auth: bool):
        self.store = store
        self._context = context
        self._client_cert_auth = client_cert_auth
        self._token: str | None = None
        self._token_read = False

    def info(self) -> AuthInfo | None:
        """The caller's AuthInfo now, or None (nobody). Raises INVALID_AUTH_TOKEN."""
        store = self.store
        if not self._token_read:  # read the metadata once, on first use (not on the hot path)
            metadata = dict(self._context.invocation_metadata() or ())
            self._token = next((metadata[k] for k in TOKEN_KEYS if metadata.get(k)), None)
            self._token_read = True
        if self._token is not None:
            found = store.tokens.info(self._token, store.state.revision)
            if found is None:
                raise errors.INVALID_AUTH_TOKEN
            return AuthInfo(*found)
        if self._client_cert_auth:
            names = (self._context.auth_context() or {}).get("x509_common_name") or []
            if names:
                return AuthInfo(names[0].decode(), store.state.revision)
        return None


_current: contextvars.ContextVar[RequestAuth | None] = contextvars.ContextVar("request_auth", default=None)


def current() -> RequestAuth | None:
    return _current.get()


def stamp_request_header(req: internal_pb2.InternalRequest) -> None:
    """Give a proposal made for the current RPC its caller as header (an empty one for nobody:
    apply-time checks then see an empty user); outside an RPC it gets none."""
    ra = _current.get()
    if ra is None:
        return
    info = ra.info()
    header = req.header
    header.SetInParent()
    if info is not None:
        header.username = info.username
        header.auth_revision = info.revision


def check_range(key: bytes, range_end: bytes) -> None:
    """Read permission on [key, range_end) for a read served without the log."""
    ra = _current.get()
    if ra is not None:  # a bad token fails even with auth off (etcd resolves it first)
        info = ra.info() or AuthInfo()
        ra.store.state.check_op(info, key, range_end, write=False)


def check_txn_reads(req: rpc_pb2.TxnRequest) -> None:
    """Permissions of a read-only txn served without the log."""
    ra = _current.get()
    if ra is not None:
        info = ra.info() or AuthInfo()
        check_txn(ra.store.state, info, req)


def watch_permitted(key: bytes, range_end: bytes) -> bool:
    """etcd's isWatchPermitted: any failure (bad token included) means no."""
    try:
        check_range(key, range_end)
    except errors.EtcdError:
        return False
    return True


def check_admin() -> None:
    """Root role needed (auth on), for RPCs that are not replicated."""
    ra = _current.get()
    if ra is not None:
        info = ra.info()
        ra.store.state.check_admin(info)


def log_info() -> AuthInfo:
    """The caller as a log entry would carry it (etcd's admin checks at apply time see an empty
    AuthInfo, not nil, when no user was given)."""
    ra = _current.get()
    return (ra.info() if ra is not None else None) or AuthInfo()


class AuthGate:
    """Runs every etcd API RPC with its RequestAuth; root-only RPCs are refused here (see module doc)."""

    def __init__(self, store: AuthStore, *, client_cert_auth: bool = False):
        self._store = store
        self._client_cert_auth = client_cert_auth

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`handler` of `method` run with the caller's RequestAuth set (and root checked for
        admin RPCs); methods outside etcdserverpb (reflection and the like) are left alone."""
        if not method.startswith("/etcdserverpb."):
            return handler
        admin = method in ADMIN_METHODS
        maintenance = method.startswith("/etcdserverpb.Maintenance/")
        store, cert = self._store, self._client_cert_auth

        def enter(context) -> None:
            _current.set(RequestAuth(store, context, cert))
            if admin:
                try:
                    check_admin()
                except errors.EtcdError as exc:
                    raise _as_maintenance_error(exc) if maintenance else exc

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                try:
                    enter(context)
                except errors.EtcdError as exc:
                    await errors.abort_with(context, exc)
                return await inner(request, context)
            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request, context):
                try:
                    enter(context)
                except errors.EtcdError as exc:
                    await errors.abort_with(context, exc)
                async with contextlib.aclosing(inner_us(request, context)) as responses:
                    async for resp in responses:
                        yield resp
            return handler._replace(unary_stream=unary_stream)
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream_stream(request_iterator, context):
                enter(context)
                async with contextlib.aclosing(inner_ss(request_iterator, context)) as responses:
                    async for resp in responses:
                        yield resp
            return handler._replace(stream_stream=stream_stream)
        return handler
