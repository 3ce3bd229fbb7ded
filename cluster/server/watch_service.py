"""etcdserverpb.Watch: one bidirectional stream carrying many watchers.

Per stream: a reader task handles create / cancel / progress requests, and the handler itself
writes whatever lands in the stream's `WatchOutbox` (control responses and the hub's event
responses), splitting large responses of `fragment` watchers as etcd's sendFragments does.
Behaviour checked against etcd 3.4.23:
- watch_id 0 means "pick one": the lowest unused id counting up from the stream's last pick;
  a client-chosen id already in use gets {watch_id: -1, created, canceled, cancel_reason}.
- created responses carry the current revision; a start revision that was compacted gets
  `created` first, then {canceled, compact_revision} with header revision 0.
- a WatchProgressRequest gets {watch_id: -1} with the current revision; cancelling an unknown id
  gets no answer; when the client half-closes, the stream stays open (etcd keeps sending).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from . import errors
from .auth import gate
from .proposer import ResponseHeaders
from .watch_hub import Watcher, WatchHub, WatchOutbox

log = logging.getLogger(__name__)

OUTBOX_CAPACITY = 256  # event responses per stream before its watchers fall back to catch-up


def _varint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length


def fragments(resp: rpc_pb2.WatchResponse, limit: int) -> list[rpc_pb2.WatchResponse]:
    """etcd's sendFragments: split `resp` into responses under `limit` bytes (each holds at least
    one event); all but the last have fragment=true. Small or single-event responses go whole."""
    if len(resp.events) < 2 or resp.ByteSize() < limit:
        return [resp]
    base = rpc_pb2.WatchResponse()
    base.CopyFrom(resp)
    del base.events[:]
    base_size = base.ByteSize() + 2  # + the fragment flag
    out, current, size = [], [], base_size
    for ev in resp.events:
        ev_size = ev.ByteSize()
        ev_size += 1 + _varint_len(ev_size)
        if current and size + ev_size >= limit:
            out.append(current)
            current, size = [], base_size
        current.append(ev)
        size += ev_size
    out.append(current)
    pieces = []
    for i, evs in enumerate(out):
        piece = rpc_pb2.WatchResponse()
        piece.CopyFrom(base)
        piece.events.extend(evs)
        piece.fragment = i < len(out) - 1
        pieces.append(piece)
    return pieces


def _permission_range(creq: rpc_pb2.WatchCreateRequest) -> tuple[bytes, bytes]:
    """The range etcd 3.4 checks for a watch: an empty key is "\\0", and a from-key watch
    (range_end "\\0") is checked as its start key alone (etcd's quirk, kept)."""
    key = creq.key or b"\0"
    return key, b"" if creq.range_end == b"\0" else creq.range_end


class _StreamState:
    """The watchers of one stream, by id, and the stream's next automatic id."""

    def __init__(self) -> None:
        self.watchers: dict[int, Watcher] = {}
        self.next_id = 0

    def pick_id(self, requested: int) -> int | None:
        if requested != 0:
            return None if self._in_use(requested) else requested
        while self._in_use(self.next_id):
            self.next_id += 1
        picked = self.next_id
        self.next_id += 1
        return picked

    def _in_use(self, watch_id: int) -> bool:
        w = self.watchers.get(watch_id)
        return w is not None and w.active  # the hub ends watchers on compaction


class WatchService(rpc_pb2_grpc.WatchServicer):
    """Watch streams over the member's WatchHub."""

    def __init__(self, hub: WatchHub, headers: ResponseHeaders, *, max_request_bytes: int,
                 outbox_capacity: int = OUTBOX_CAPACITY):
        self._hub = hub
        self._headers = headers
        self._max_request_bytes = max_request_bytes
        self._outbox_capacity = outbox_capacity

    async def Watch(self, request_iterator, context: grpc.aio.ServicerContext):
        outbox = WatchOutbox(self._outbox_capacity)
        state = _StreamState()
        self._hub.stream_count += 1
        reader = asyncio.create_task(self._read_requests(request_iterator, outbox, state))
        try:
            while True:
                resp = await outbox.get()
                w = state.watchers.get(resp.watch_id)
                if w is not None and w.fragment and resp.events:
                    for piece in fragments(resp, self._max_request_bytes):
                        yield piece
                else:
                    yield resp
        finally:
            reader.cancel()
            outbox.close()
            for w in state.watchers.values():
                self._hub.remove(w)
            state.watchers.clear()
            self._hub.stream_count -= 1

    async def _read_requests(self, request_iterator, outbox: WatchOutbox, state: _StreamState) -> None:
        try:
            async for req in request_iterator:
                # a client that sends requests but reads no responses is not read any further
                await outbox.wait_backlog_below(self._outbox_capacity * 2)
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    self._create(req.create_request, outbox, state)
                elif kind == "cancel_request":
                    self._cancel(req.cancel_request.watch_id, outbox, state)
                elif kind == "progress_request":
                    outbox.put_control(rpc_pb2.WatchResponse(
                        header=self._headers.make(self._hub.notified_rev), watch_id=-1))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away or sent garbage: the stream ends
            log.debug("watch stream reader ended", extra={"fields": {"error": repr(exc)}})

    def _create(self, creq: rpc_pb2.WatchCreateRequest, outbox: WatchOutbox, state: _StreamState) -> None:
        header = self._headers.make(self._hub.notified_rev)
        if not gate.watch_permitted(*_permission_range(creq)):  # etcd 3.4.23: id -1, stream goes on
            outbox.put_control(rpc_pb2.WatchResponse(
                header=header, watch_id=-1, created=True, canceled=True,
                cancel_reason=errors.WATCH_PERMISSION_DENIED_REASON))
            return
        watch_id = state.pick_id(creq.watch_id)
        if watch_id is None:
            outbox.put_control(rpc_pb2.WatchResponse(
                header=header, watch_id=-1, created=True, canceled=True,
                cancel_reason=errors.WATCH_DUPLICATE_ID_REASON))
            return
        w = Watcher(watch_id, outbox, creq, self._hub.start_revision(creq.start_revision))
        state.watchers[watch_id] = w
        outbox.put_control(rpc_pb2.WatchResponse(header=header, watch_id=watch_id, created=True))
        self._hub.add(w)

    def _cancel(self, watch_id: int, outbox: WatchOutbox, state: _StreamState) -> None:
        w = state.watchers.pop(watch_id, None)
        if w is None:
            return
        self._hub.remove(w)
        outbox.put_control(rpc_pb2.WatchResponse(
            header=self._headers.make(self._hub.notified_rev), watch_id=watch_id, canceled=True))
