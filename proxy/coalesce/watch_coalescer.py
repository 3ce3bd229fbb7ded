"""WatchCoalescer: finds or makes the shared upstream pieces a client watch needs.

- one `UpstreamWatchStream` per identity (the forwarded auth metadata): a watch is opened upstream
  with the token of a client allowed to see it, and never shared across tokens;
- one `WatchFanout` per (identity, key, range_end), shared by every client watcher of that
  identity on that range, whatever client stream it comes from.
Both are closed when nothing uses them any more.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, AsyncIterator

from protos.etcdserverpb import rpc_pb2

from ..namespace import Namespace
from ..upstream import Upstream
from .watch_fanout import WatchFanout
from .watch_upstream import UpstreamWatchStream

if TYPE_CHECKING:
    from .watch_client import ClientWatcher

Identity = tuple[tuple[str, str], ...]


class WatchCoalescer:
    """Registry of upstream watch streams (per identity) and fanouts (per identity and range)."""

    def __init__(self, upstream: Upstream, namespace: Namespace):
        self._upstream = upstream
        self._namespace = namespace
        self._streams: dict[Identity, UpstreamWatchStream] = {}
        self._fanouts: dict[tuple[Identity, bytes, bytes], WatchFanout] = {}
        self._borrowers: dict[Identity, int] = {}
        self._closing: set[asyncio.Task] = set()

    def subscribe(self, identity: Identity, key: bytes, range_end: bytes, watcher: "ClientWatcher") -> None:
        fkey = (identity, key, range_end)
        fanout = self._fanouts.get(fkey)
        if fanout is None:
            stream = self._stream(identity)
            fanout = self._fanouts[fkey] = WatchFanout(
                stream, key, range_end, on_closed=lambda f, fkey=fkey: self._fanout_closed(fkey, f))
        fanout.subscribe(watcher)

    def last_header(self, identity: Identity) -> rpc_pb2.ResponseHeader:
        h = rpc_pb2.ResponseHeader()
        stream = self._streams.get(identity)
        if stream is not None:
            h.CopyFrom(stream.last_header)
        return h

    @contextlib.asynccontextmanager
    async def borrow_stream(self, identity: Identity) -> AsyncIterator[UpstreamWatchStream]:
        """The identity's upstream stream, kept open while borrowed (for progress requests)."""
        stream = self._stream(identity)
        self._borrowers[identity] = self._borrowers.get(identity, 0) + 1
        try:
            yield stream
        finally:
            self._borrowers[identity] -= 1
            if not self._borrowers[identity]:
                del self._borrowers[identity]
            self._release_if_idle(identity)

    async def close(self) -> None:
        streams = list(self._streams.values())
        self._streams.clear()
        self._fanouts.clear()
        for stream in streams:
            await stream.close()
        for task in list(self._closing):
            await task

    def _stream(self, identity: Identity) -> UpstreamWatchStream:
        stream = self._streams.get(identity)
        if stream is None:
            stream = self._streams[identity] = UpstreamWatchStream(self._upstream, identity, self._namespace)
        return stream

    def _fanout_closed(self, fkey: tuple[Identity, bytes, bytes], fanout: WatchFanout) -> None:
        if self._fanouts.get(fkey) is fanout:
            del self._fanouts[fkey]
        self._release_if_idle(fkey[0])

    def _release_if_idle(self, identity: Identity) -> None:
        stream = self._streams.get(identity)
        if stream is None or not stream.idle or identity in self._borrowers:
            return
        del self._streams[identity]
        task = asyncio.get_running_loop().create_task(stream.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
