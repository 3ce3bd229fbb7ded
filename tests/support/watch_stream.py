"""`WatchStream`: a Watch bidi stream driven from a (synchronous) test.

Requests go in with `send` / `create`; a thread reads the responses into a queue, followed by
what ended the stream: the `grpc.RpcError`, or `ENDED` when the server closed it cleanly.
`recv` returns the next response and raises when the stream ended; `next` returns the next item
as it is (response, RpcError or ENDED), for tests about how a stream ends. Every wait is bounded.
"""

from __future__ import annotations

import queue
import threading

import grpc

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

ENDED = "ENDED"  # queued after the last response when the server ended the stream without error


def create_request(key: bytes, **kw) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, **kw))


class WatchStream:
    def __init__(self, stub: rpc_pb2_grpc.WatchStub, metadata=None):
        self._requests: queue.Queue = queue.Queue()
        self._call = stub.Watch(iter(self._requests.get, None), metadata=metadata)
        self._responses: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for resp in self._call:
                self._responses.put(resp)
            self._responses.put(ENDED)
        except grpc.RpcError as exc:
            self._responses.put(exc)

    def send(self, req: rpc_pb2.WatchRequest) -> None:
        self._requests.put(req)

    def create(self, key: bytes, **kw) -> rpc_pb2.WatchResponse:
        self.send(create_request(key, **kw))
        return self.recv()

    def next(self, timeout: float = 10.0):
        """The next response, or what ended the stream (an RpcError or ENDED)."""
        return self._responses.get(timeout=timeout)

    def recv(self, timeout: float = 10.0) -> rpc_pb2.WatchResponse:
        item = self.next(timeout)
        if isinstance(item, Exception):
            raise item
        if item is ENDED:
            raise EOFError("the server ended the watch stream")
        return item

    def recv_nothing(self, within: float) -> bool:
        """True if nothing arrives within `within` seconds."""
        try:
            self._responses.get(timeout=within)
            return False
        except queue.Empty:
            return True

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
