"""Wire encoding of watch responses, shared by every client watcher of one upstream watch.

The fan-out cost of one upstream event must not be "build and serialize a protobuf per client".
An `EventBatch` serializes its events once per *view* (prev_kv kept or stripped, PUTs or DELETEs
filtered out, fragmented or whole) and caches the bytes; each client watcher then only appends its
own `watch_id` field. Protobuf allows this: a serialized message followed by another serialized
message of the same type parses as their merge, and a scalar field set in the second one wins.

All responses leave the proxy as bytes (the Watch method is registered with no serializer).
"""

from __future__ import annotations

from dataclasses import dataclass

from protos.etcdserverpb import rpc_pb2
from protos.mvccpb import kv_pb2

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE

# etcd splits a response for a `fragment` watcher when it reaches the server's max request size
# (--max-request-bytes, 1.5 MiB by default) plus 512 KiB of gRPC overhead allowance.
DEFAULT_FRAGMENT_BYTES = 1536 * 1024 + 512 * 1024


@dataclass(frozen=True)
class WatchView:
    """The per-client options that change the bytes a client watcher receives for a batch."""

    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    fragment: bool = False


def watch_id_field(watch_id: int) -> bytes:
    """The serialized `watch_id` field alone (empty for 0, the proto3 default)."""
    return rpc_pb2.WatchResponse(watch_id=watch_id).SerializeToString()


def encode_response(**fields) -> bytes:
    """A whole WatchResponse as bytes (control responses: created, canceled, progress)."""
    return rpc_pb2.WatchResponse(**fields).SerializeToString()


class EventBatch:
    """The events of one or more whole revisions of one upstream watch, in revision order.

    Invariant: a batch never holds part of a revision; `revision` is the highest revision in it,
    `first_revision` the lowest. Keys are already stripped of the proxy's namespace. `header` is
    the upstream's response header (cluster id, member id, raft term, revision).
    """

    __slots__ = ("header", "events", "first_revision", "revision", "_bodies")

    def __init__(self, header: rpc_pb2.ResponseHeader, events: list[kv_pb2.Event]):
        if not events:
            raise ValueError("an EventBatch holds at least one event")
        self.header = header
        self.events = events
        self.first_revision = events[0].kv.mod_revision
        self.revision = events[-1].kv.mod_revision
        self._bodies: dict[tuple[WatchView, int], list[bytes]] = {}

    def bodies(self, view: WatchView, fragment_bytes: int = DEFAULT_FRAGMENT_BYTES,
               min_revision: int = 0) -> list[bytes]:
        """The responses (without watch_id) a watcher with `view` receives; [] if all filtered out.

        `min_revision` drops events below it (a watcher joining in the middle of a batch); such
        partial views are built fresh, every other view is cached.
        """
        if min_revision > self.first_revision:
            return self._encode(view, [e for e in self.events if e.kv.mod_revision >= min_revision],
                                fragment_bytes)
        key = (view, fragment_bytes if view.fragment else 0)
        bodies = self._bodies.get(key)
        if bodies is None:
            bodies = self._bodies[key] = self._encode(view, self.events, fragment_bytes)
        return bodies

    def _encode(self, view: WatchView, events: list[kv_pb2.Event], fragment_bytes: int) -> list[bytes]:
        if view.no_put or view.no_delete:
            events = [e for e in events
                      if not ((view.no_put and e.type == PUT) or (view.no_delete and e.type == DELETE))]
        if not events:
            # etcd sends nothing when every event of a response is filtered out.
            return []
        if not view.prev_kv and any(e.HasField("prev_kv") for e in events):
            stripped = []
            for e in events:
                c = kv_pb2.Event()
                c.CopyFrom(e)
                c.ClearField("prev_kv")
                stripped.append(c)
            events = stripped
        whole = rpc_pb2.WatchResponse(header=self.header, events=events)
        if not view.fragment or len(events) < 2 or whole.ByteSize() < fragment_bytes:
            return [whole.SerializeToString()]
        return _fragments(self.header, events, fragment_bytes)


def _fragments(header: rpc_pb2.ResponseHeader, events: list[kv_pb2.Event], limit: int) -> list[bytes]:
    """Split as etcd does: each fragment stays under `limit` bytes unless it holds a single event;
    every fragment but the last has `fragment=true`."""
    out: list[bytes] = []
    base = rpc_pb2.WatchResponse(header=header, fragment=True).ByteSize()
    chunk: list[kv_pb2.Event] = []
    size = base
    for e in events:
        esize = e.ByteSize()
        esize += 1 + _varint_len(esize)  # field tag (11) + length prefix
        if chunk and size + esize >= limit:
            out.append(rpc_pb2.WatchResponse(header=header, events=chunk, fragment=True).SerializeToString())
            chunk, size = [], base
        chunk.append(e)
        size += esize
    out.append(rpc_pb2.WatchResponse(header=header, events=chunk).SerializeToString())
    return out


def _varint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length
