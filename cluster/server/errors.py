"""etcd 3.4's client-facing error catalogue: one gRPC status code and exact message per error.

Clients match on these strings (clientv3's rpctypes does), so every message below is copied
letter for letter from etcd 3.4 (etcdserver/api/v3rpc/rpctypes/error.go) and checked against a
running etcd 3.4.23. Services raise `EtcdError`; the gRPC glue (`abort_with`) turns it into the
status. Store errors (cluster.mvcc.errors) are mapped by `from_store_error`.
"""

from __future__ import annotations

import grpc

from cluster.mvcc import errors as store_errors


class EtcdError(Exception):
    """An error with etcd's gRPC status code and message; raise it from any service code."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"EtcdError({self.code.name}, {self.message!r})"


_IA = grpc.StatusCode.INVALID_ARGUMENT
_FP = grpc.StatusCode.FAILED_PRECONDITION
_OOR = grpc.StatusCode.OUT_OF_RANGE
_NF = grpc.StatusCode.NOT_FOUND
_UN = grpc.StatusCode.UNAVAILABLE

# KV
EMPTY_KEY = EtcdError(_IA, "etcdserver: key is not provided")
KEY_NOT_FOUND = EtcdError(_IA, "etcdserver: key not found")
VALUE_PROVIDED = EtcdError(_IA, "etcdserver: value is provided")
LEASE_PROVIDED = EtcdError(_IA, "etcdserver: lease is provided")
TOO_MANY_OPS = EtcdError(_IA, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = EtcdError(_IA, "etcdserver: duplicate key given in txn request")
INVALID_SORT_OPTION = EtcdError(_IA, "etcdserver: invalid sort option")  # etcd 3.5 (3.4 crashes)
COMPACTED = EtcdError(_OOR, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = EtcdError(_OOR, "etcdserver: mvcc: required revision is a future revision")
NO_SPACE = EtcdError(grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")

# Lease
LEASE_NOT_FOUND = EtcdError(_NF, "etcdserver: requested lease not found")
LEASE_EXIST = EtcdError(_FP, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = EtcdError(_OOR, "etcdserver: too large lease TTL")

# Cluster
MEMBER_NOT_FOUND = EtcdError(_NF, "etcdserver: member not found")
MEMBER_NOT_ENOUGH_STARTED = EtcdError(
    _FP, "etcdserver: re-configuration failed due to not enough started members")
MEMBER_NOT_LEARNER = EtcdError(_FP, "etcdserver: can only promote a learner member")
MEMBER_BAD_URLS = EtcdError(_IA, "etcdserver: given member URLs are invalid")
MEMBER_EXIST = EtcdError(_FP, "etcdserver: member ID already exist")
PEER_URL_EXIST = EtcdError(_FP, "etcdserver: Peer URLs already exists")
LEARNER_NOT_READY = EtcdError(_FP, "etcdserver: can only promote a learner member which is in sync with leader")
TOO_MANY_LEARNERS = EtcdError(_FP, "etcdserver: too many learner members in cluster")
NOT_SUPPORTED_FOR_LEARNER = EtcdError(_UN, "etcdserver: rpc not supported for learner")

# Auth
_PD = grpc.StatusCode.PERMISSION_DENIED
ROOT_USER_NOT_EXIST = EtcdError(_FP, "etcdserver: root user does not exist")
ROOT_ROLE_NOT_EXIST = EtcdError(_FP, "etcdserver: root user does not have root role")
USER_ALREADY_EXIST = EtcdError(_FP, "etcdserver: user name already exists")
USER_EMPTY = EtcdError(_IA, "etcdserver: user name is empty")
USER_NOT_FOUND = EtcdError(_FP, "etcdserver: user name not found")
ROLE_ALREADY_EXIST = EtcdError(_FP, "etcdserver: role name already exists")
ROLE_NOT_FOUND = EtcdError(_FP, "etcdserver: role name not found")
ROLE_EMPTY = EtcdError(_IA, "etcdserver: role name is empty")
AUTH_FAILED = EtcdError(_IA, "etcdserver: authentication failed, invalid user ID or password")
PERMISSION_DENIED = EtcdError(_PD, "etcdserver: permission denied")
ROLE_NOT_GRANTED = EtcdError(_FP, "etcdserver: role is not granted to the user")
PERMISSION_NOT_GRANTED = EtcdError(_FP, "etcdserver: permission is not granted to the role")
AUTH_NOT_ENABLED = EtcdError(_FP, "etcdserver: authentication is not enabled")
INVALID_AUTH_TOKEN = EtcdError(grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
INVALID_AUTH_MGMT = EtcdError(_IA, "etcdserver: invalid auth management")
AUTH_OLD_REVISION = EtcdError(_IA, "etcdserver: revision of auth store is old")

# Server
REQUEST_TOO_LARGE = EtcdError(_IA, "etcdserver: request is too large")
STOPPED = EtcdError(_UN, "etcdserver: server stopped")
TIMEOUT = EtcdError(_UN, "etcdserver: request timed out")
UNHEALTHY = EtcdError(_UN, "etcdserver: unhealthy cluster")
BAD_LEADER_TRANSFEREE = EtcdError(_FP, "etcdserver: bad leader transferee")
NOT_LEADER = EtcdError(_FP, "etcdserver: not leader")
# etcd has no gRPC status for this one: togRPCError turns it into codes.Unknown
LEADER_TRANSFER_TIMEOUT = EtcdError(grpc.StatusCode.UNKNOWN,
                                    "etcdserver: request timed out, leader transfer took too long")
NOT_CAPABLE = EtcdError(_UN, "etcdserver: not capable")

# Watch: not a gRPC status but the cancel_reason of a WatchResponse (mvcc.ErrWatcherDuplicateID).
WATCH_DUPLICATE_ID_REASON = "mvcc: duplicate watch ID provided on the WatchStream"
# a watch the caller may not read: the gRPC error's text form (rpctypes.ErrGRPCPermissionDenied)
WATCH_PERMISSION_DENIED_REASON = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"


def from_store_error(exc: Exception) -> EtcdError:
    """The etcd error for an exception raised by cluster.mvcc; re-raises anything unknown."""
    if isinstance(exc, store_errors.CompactedError):
        return COMPACTED
    if isinstance(exc, store_errors.FutureRevisionError):
        return FUTURE_REV
    if isinstance(exc, store_errors.LeaseNotFoundError):
        return LEASE_NOT_FOUND
    if isinstance(exc, store_errors.KeyNotFoundError):
        return KEY_NOT_FOUND
    if isinstance(exc, store_errors.LeaseExistsError):
        return LEASE_EXIST
    raise exc


async def abort_with(context: grpc.aio.ServicerContext, err: EtcdError):
    """End the RPC with `err`'s status (raises, as grpc.aio's abort does)."""
    await context.abort(err.code, err.message)
