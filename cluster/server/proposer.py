"""`Proposer`: the services' one way to write. `ResponseHeaders`: the header on every response.

A service calls `await proposer.propose(put=request)` (any field name of kvpb.InternalRequest's
`request` oneof). The proposer gives the request a unique id, refuses it if its encoding exceeds
--max-request-bytes (etcd checks the marshalled internal request the same way), registers the id
in `RequestWait`, hands the bytes to the ReplicatedLog and awaits the applied outcome: the
response message, or the `EtcdError` the apply produced, which it raises.
"""

from __future__ import annotations

import asyncio
import time

from cluster.raft import ConfChange
from protos.etcdserverpb import rpc_pb2
from protos.kvpb import internal_pb2

from . import errors
from .auth import gate
from .request_wait import RequestIdGenerator, RequestWait


class ResponseHeaders:
    """Fills cluster_id, member_id, raft_term (and revision when asked) of response headers."""

    def __init__(self, cluster_id: int, member_id: int, log, store):
        self.cluster_id = cluster_id
        self.member_id = member_id
        self._log = log
        self._store = store

    def fill(self, header: rpc_pb2.ResponseHeader, revision: int | None = None) -> None:
        """Complete `header` in place. `revision`: set it; None: keep the store's value, or use
        the current revision when there is none."""
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        header.raft_term = self._log.term
        if revision is not None:
            header.revision = revision
        elif header.revision == 0:
            header.revision = self._store.current_revision

    def make(self, revision: int) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(cluster_id=self.cluster_id, member_id=self.member_id,
                                      revision=revision, raft_term=self._log.term)


class Proposer:
    """Propose -> await applied outcome, with etcd's size limit and request timeout.

    Timeouts: `run_timeouts()` (a task the member runs) fails proposals older than `timeout`
    with "etcdserver: request timed out", once per `timeout / 4`; no timer per request."""

    def __init__(self, log, wait: RequestWait, ids: RequestIdGenerator, *,
                 max_request_bytes: int, timeout: float):
        self._log = log
        self._wait = wait
        self._ids = ids
        self._max_request_bytes = max_request_bytes
        self._timeout = timeout
        self.failed_total = 0

    def next_id(self) -> int:
        return self._ids.next()

    async def propose(self, **request):
        req = internal_pb2.InternalRequest(id=self._ids.next(), **request)
        gate.stamp_request_header(req)  # the caller, for apply-time permission checks
        data = req.SerializeToString()
        if len(data) > self._max_request_bytes:
            raise errors.REQUEST_TOO_LARGE
        fut = self._wait.register(req.id)
        try:
            self._log.propose(data)
        except BaseException:
            self._wait.forget(req.id)
            self.failed_total += 1
            raise
        return await fut

    async def propose_member_change(self, change: internal_pb2.MemberChange, cc_type) -> object:
        """Propose a membership change as a Raft ConfChange of type `cc_type` whose context is
        the InternalRequest carrying `change` (etcd puts the Member JSON there); await it applied."""
        req = internal_pb2.InternalRequest(id=self._ids.next(), member_change=change)
        fut = self._wait.register(req.id)
        try:
            self._log.propose_conf_change(ConfChange(cc_type, change.member_id, req.SerializeToString()))
        except BaseException:
            self._wait.forget(req.id)
            self.failed_total += 1
            raise
        return await fut

    async def run_timeouts(self) -> None:
        while True:
            await asyncio.sleep(self._timeout / 4)
            self.failed_total += self._wait.expire(time.monotonic() - self._timeout, errors.TIMEOUT)
