"""`BackendQuota`: etcd's --quota-backend-bytes gate, checked before a write is proposed.

As etcd's backendQuota: a request that would grow the database past the quota is refused with
"mvcc: database space exceeded", and the member raises the NOSPACE alarm (through the seam, so
every member agrees). While NOSPACE is active, puts, txns that put and lease grants are refused
(also enforced at apply time by ApplyLoop); reads, deletes and compaction keep working until
the alarm is disarmed.
"""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable

from protos.etcdserverpb import rpc_pb2

from . import errors
from .alarms import AlarmSet

log = logging.getLogger(__name__)

DEFAULT_QUOTA_BYTES = 2 * 1024 * 1024 * 1024  # etcd's default when the flag is 0
_PUT_OVERHEAD = 256       # per-key bookkeeping (index entries, revision keys), roughly etcd's
_LEASE_GRANT_COST = 64
_SIZE_REFRESH_SECONDS = 0.1


def quota_bytes_from_flag(flag_value: int) -> int:
    """0 -> etcd's 2 GiB default; negative -> no quota (returned as 0)."""
    if flag_value == 0:
        return DEFAULT_QUOTA_BYTES
    return max(0, flag_value)


def request_cost(kind: str, req) -> int:
    if kind == "put":
        return len(req.key) + len(req.value) + _PUT_OVERHEAD
    if kind == "txn":
        return sum(request_cost("put", op.request_put) if op.WhichOneof("request") == "request_put"
                   else request_cost("txn", op.request_txn) if op.WhichOneof("request") == "request_txn"
                   else 0 for op in (*req.success, *req.failure))
    if kind == "lease_grant":
        return _LEASE_GRANT_COST
    return 0


class BackendQuota:
    """Admission check for writes that grow the database."""

    def __init__(self, store, alarms: AlarmSet, quota_bytes: int, member_id: int,
                 raise_alarm: Callable[[rpc_pb2.AlarmRequest], Awaitable[object]]):
        self.store = store
        self.alarms = alarms
        self.quota_bytes = quota_bytes
        self.member_id = member_id
        self._raise_alarm = raise_alarm
        self._size = 0
        self._size_at = 0.0

    def check(self, kind: str, req) -> bool:
        """Event loop, cheap (cached db size). Raises NO_SPACE while the NOSPACE alarm is active and
        the request grows the store (cost > 0);
        returns True if the write would exceed the quota: the caller must then `await refuse()`."""
        cost = request_cost(kind, req)
        if self.alarms.no_space and cost > 0:  # a txn that only deletes or reads still runs
            raise errors.NO_SPACE
        if self.quota_bytes <= 0:
            return False
        now = time.monotonic()
        if now - self._size_at > _SIZE_REFRESH_SECONDS:
            self._size = self.store.db_size()
            self._size_at = now
        return self._size + cost >= self.quota_bytes  # etcd's Available: size + cost < quota

    async def refuse(self) -> None:
        """Raise the NOSPACE alarm (applied before returning, as etcd's quota interceptor does),
        then raise NO_SPACE."""
        log.warning("backend quota exceeded; raising NOSPACE alarm", extra={"fields": {
            "quota_bytes": self.quota_bytes, "db_size": self._size}})
        await self._raise_alarm(rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=self.member_id, alarm=rpc_pb2.NOSPACE))
        raise errors.NO_SPACE
