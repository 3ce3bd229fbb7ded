"""The proxy's etcd Watch service: client watch streams served through shared upstream watches.

`add_to_server(server, upstream, namespace)` registers `etcdserverpb.Watch/Watch` on a grpc.aio
server and returns the `WatchService` (close it after the server stops). Responses are written as
pre-serialized bytes (see proxy/coalesce/watch_events.py), so the method has no response
serializer. How the coalescing works: docs/proxy-watch.md.
"""

from __future__ import annotations

import grpc

from cluster.grpc_wrapping import WrappingServer
from protos.etcdserverpb import rpc_pb2

from .coalesce.watch_client import (DEFAULT_PROGRESS_INTERVAL_S, DEFAULT_SEND_QUEUE_LIMIT,
                                    ClientWatchStream)
from .coalesce.watch_coalescer import WatchCoalescer
from .coalesce.watch_events import DEFAULT_FRAGMENT_BYTES
from .namespace import Namespace
from .upstream import Upstream

SERVICE = "etcdserverpb.Watch"

# Metadata that decides which upstream stream (whose token) a watch is opened with.
IDENTITY_KEYS = ("token", "authorization")


def identity_of(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The client's auth metadata: watches are shared only between clients that send the same."""
    md = context.invocation_metadata() or ()
    return tuple(sorted((k, v) for k, v in md if k in IDENTITY_KEYS))


class WatchService:
    """Serves every client Watch RPC of this proxy process through one `WatchCoalescer`."""

    def __init__(self, upstream: Upstream, namespace: Namespace, *,
                 send_queue_limit: int = DEFAULT_SEND_QUEUE_LIMIT,
                 progress_interval: float = DEFAULT_PROGRESS_INTERVAL_S,
                 fragment_bytes: int = DEFAULT_FRAGMENT_BYTES):
        self.coalescer = WatchCoalescer(upstream, namespace)
        self._namespace = namespace
        self._options = dict(send_queue_limit=send_queue_limit, progress_interval=progress_interval,
                             fragment_bytes=fragment_bytes)

    async def watch(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        stream = ClientWatchStream(self.coalescer, identity_of(context), self._namespace, **self._options)
        await stream.serve(request_iterator, context)

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {"Watch": grpc.stream_stream_rpc_method_handler(
            self.watch, request_deserializer=rpc_pb2.WatchRequest.FromString)}

    async def close(self) -> None:
        await self.coalescer.close()


def add_to_server(server: grpc.aio.Server | WrappingServer, upstream: Upstream, namespace: Namespace,
                  **options) -> WatchService:
    """Register the Watch service on `server`; `options` are WatchService's keyword arguments."""
    service = WatchService(upstream, namespace, **options)
    handlers = service.method_handlers()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return service
