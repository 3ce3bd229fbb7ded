"""`RequireLeaderGate`: etcd 3.4's contract for client calls that carry the gRPC metadata
`hasleader: true` (Go clientv3's `WithRequireLeader`, used by `etcdctl watch`, Kubernetes'
watches and both grpc-proxies):

- such a call that starts while this member knows no leader fails at once with
  "etcdserver: no leader" (Unavailable);
- such a stream (Watch, LeaseKeepAlive, Snapshot) already running ends with that error once the
  member has known no leader at `MAX_NO_LEADER_CHECKS` checks in a row, one election timeout
  apart (etcd's monitorLeader). Its client then reconnects to a member that has a leader instead
  of waiting on one cut off from the cluster, whose watches deliver nothing.

Calls without the metadata are never affected. `wrap` is applied to every handler at
registration (cluster/grpc_wrapping.py); `run()` is the member's monitor task (loop only).

How a running stream is ended: the wrapper pulls the inner handler's responses itself and marks
the stream while it waits on the inner handler. The monitor flags every registered stream and
cancels the call's task if it is waiting there: the CancelledError surfaces at that await, where
the wrapper ends the call with etcd's error. A stream that is not waiting there (grpc is sending
its last response) sees the flag when grpc asks for the next one; cancelling it inside grpc's
send would end the call as CANCELLED instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable

import grpc

from cluster.replication.errors import NO_LEADER

from .errors import abort_with

MAX_NO_LEADER_CHECKS = 3  # etcd's maxNoLeaderCnt

_ETCD_API = "/etcdserverpb."
_METADATA_KEY, _METADATA_VALUE = "hasleader", "true"  # etcd's rpctypes.MetadataRequireLeaderKey


def requires_leader(context) -> bool:
    """Whether the call asked for a leader (`hasleader: true` in its metadata)."""
    for key, value in context.invocation_metadata() or ():
        if key == _METADATA_KEY:
            return value == _METADATA_VALUE
    return False


class _Stream:
    """A running require-leader stream: its call's task, and where it stands."""

    __slots__ = ("task", "lost", "waiting")

    def __init__(self):
        self.task: asyncio.Task | None = None  # the task pulling the next response
        self.lost = False  # the monitor gave up on the leader: end with NO_LEADER
        self.waiting = False  # suspended on the inner handler (safe to cancel)


class RequireLeaderGate:
    """Refuses and ends require-leader calls while the member has no leader (module doc)."""

    def __init__(self, has_leader: Callable[[], bool], check_interval: float):
        """`has_leader()`: whether this member knows a leader now (cheap, called per call).
        `check_interval`: seconds between the monitor's checks (the election timeout)."""
        self._has_leader = has_leader
        self._check_interval = check_interval
        self._streams: set[_Stream] = set()
        self._misses = 0  # checks in a row that found no leader

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    async def run(self) -> None:
        """`check()` every interval, until cancelled."""
        while True:
            await asyncio.sleep(self._check_interval)
            self.check()

    def check(self) -> None:
        """One check for a leader: from the MAX_NO_LEADER_CHECKS-th miss in a row on, end every
        registered stream (those that start later are refused at once anyway)."""
        self._misses = 0 if self._has_leader() else self._misses + 1
        if self._misses < MAX_NO_LEADER_CHECKS:
            return
        for stream in self._streams:
            stream.lost = True
            if stream.waiting:
                stream.task.cancel()
        self._streams.clear()

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if not method.startswith(_ETCD_API):
            return handler
        has_leader = self._has_leader
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def gated(request, context):
                if not has_leader() and requires_leader(context):
                    await abort_with(context, NO_LEADER)
                return await behavior(request, context)

            return handler._replace(unary_unary=gated)
        if handler.response_streaming:
            field = "stream_stream" if handler.request_streaming else "unary_stream"
            streaming = getattr(handler, field)
            streams = self._streams

            async def gated_stream(request, context):
                if not requires_leader(context):
                    async with contextlib.aclosing(streaming(request, context)) as responses:
                        async for response in responses:
                            yield response
                    return
                if not has_leader():
                    await abort_with(context, NO_LEADER)
                stream = _Stream()
                streams.add(stream)
                try:
                    async with contextlib.aclosing(streaming(request, context)) as responses:
                        pending = aiter(responses)
                        while not stream.lost:
                            stream.task = asyncio.current_task()  # grpc.aio: the call's task
                            stream.waiting = True
                            try:
                                response = await anext(pending)
                            except StopAsyncIteration:
                                if not stream.lost:
                                    return
                                break  # the servicer ended quietly on our cancellation
                            except asyncio.CancelledError:
                                if not stream.lost:  # the client went away, or the server stops
                                    raise
                                break
                            finally:
                                stream.waiting = False
                            yield response
                    if stream.task.cancelling():
                        stream.task.uncancel()  # the cancellation was ours: answered here
                    await abort_with(context, NO_LEADER)
                finally:
                    streams.discard(stream)

            return handler._replace(**{field: gated_stream})
        raise ValueError(f"{method}: client-streaming-only methods are not part of etcd's API")
