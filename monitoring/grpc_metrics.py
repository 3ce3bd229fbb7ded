"""Server-side gRPC metrics with go-grpc-prometheus's names, labels, types and semantics.

etcd registers go-grpc-prometheus on its gRPC server, so dashboards and alerts written for etcd
read these series:

    grpc_server_started_total        counter    grpc_type, grpc_service, grpc_method
    grpc_server_handled_total        counter    + grpc_code (Go's CamelCase code name)
    grpc_server_msg_received_total   counter    grpc_type, grpc_service, grpc_method
    grpc_server_msg_sent_total       counter    grpc_type, grpc_service, grpc_method
    grpc_server_handling_seconds     histogram  grpc_type, grpc_service, grpc_method

and etcd's own totals of client traffic (etcdserver/api/v3rpc/metrics.go), no labels:

    etcd_network_client_grpc_received_bytes_total   counter  serialized request messages
    etcd_network_client_grpc_sent_bytes_total       counter  serialized response messages

Semantics kept from go-grpc-prometheus:
- started: when the handler is entered; handled: when it finishes, with the status code the
  client receives. The histogram observes the same interval (etcd exposes it only with
  `--metrics=extensive`; we always do).
- unary calls: one message received at start, one sent only when the call ends OK.
- streams: a message counts once the framework has taken it (received: the handler got it;
  sent: the write completed). End of stream is not a message.
- only methods the server implements are counted; unknown methods (UNIMPLEMENTED) are not.
- bytes: the serialized size of every message (as etcd 3.4.23 counts: a Put of key `a` value
  `b` is 6 bytes received), without gRPC's 5-byte frame prefix or HTTP/2 framing. They are
  counted where the bytes already are, at no extra serialization: the handler's deserializer and
  serializer are wrapped to add `len()` of what they take and return; a handler without one
  (raw bytes in or out) is counted by the length of the bytes it takes and returns.

Cost: the cache-hit path of the proxy runs through here, so the per-call work is a few integer
increments on a per-method record (`MethodStats`) reached through a closure built once per
method. Nothing touches prometheus_client per call; `collect()` builds the metric families at
scrape time. All counting happens on the event loop thread (grpc.aio runs handlers there), so no
lock is needed; a scrape from another thread may see a call counted as started but not yet
handled, as it could in Go.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
from time import perf_counter
from typing import AsyncIterator, Iterable

import grpc
import grpc.aio
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, CollectorRegistry

# go-grpc-prometheus's default buckets (Prometheus DefBuckets), in seconds.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Go's codes.Code.String() for each status, indexed by the numeric code.
GO_CODE_NAMES = (
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
)
_CODE_INDEX = {code: code.value[0] for code in grpc.StatusCode}
_OK, _CANCELED, _UNKNOWN, _DEADLINE_EXCEEDED = 0, 1, 2, 4

UNARY, CLIENT_STREAM, SERVER_STREAM, BIDI_STREAM = "unary", "client_stream", "server_stream", "bidi_stream"

_LABELS = ("grpc_method", "grpc_service", "grpc_type")  # sorted, as Go's exposition prints them
_HANDLED_LABELS = ("grpc_code",) + _LABELS


class MethodStats:
    """Running counts for one (grpc_type, grpc_service, grpc_method).

    Plain attributes mutated on the event loop; `buckets[i]` counts observations that fell in
    bucket i only (not cumulative), the last slot being +Inf.
    """

    __slots__ = ("labels", "started", "received", "sent", "received_bytes", "sent_bytes", "handled",
                 "buckets", "seconds", "bounds", "initialized")

    def __init__(self, grpc_type: str, service: str, method: str, bounds: tuple[float, ...]):
        self.labels = (method, service, grpc_type)  # in _LABELS order
        self.started = 0
        self.received = 0
        self.sent = 0
        self.received_bytes = 0
        self.sent_bytes = 0
        self.handled = [0] * len(GO_CODE_NAMES)
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.seconds = 0.0
        self.initialized = False  # when True, every code is exported even at 0 (as Go's Initialize)

    def finish(self, code: int, start: float) -> None:
        """Record the end of a call begun at perf_counter() == start, with status `code`."""
        elapsed = perf_counter() - start
        self.handled[code] += 1
        self.buckets[bisect.bisect_left(self.bounds, elapsed)] += 1
        self.seconds += elapsed


def _raw_size(message) -> int:
    """The size of a message a handler without (de)serializer took or returned (raw bytes); 0
    otherwise: a (de)serialized message is counted by `_counting_codecs`."""
    return len(message) if type(message) is bytes else 0


def _code_after_exception(exc: BaseException, context: grpc.aio.ServicerContext) -> int:
    """The status code grpc.aio sends when a handler ends with `exc`."""
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        # The framework stopped the handler: the client went away, or the deadline passed.
        return _DEADLINE_EXCEEDED if context.time_remaining() == 0 else _CANCELED
    code = context.code()  # set by context.abort(), or by set_code() before raising
    if code is None or code is grpc.StatusCode.OK:
        return _UNKNOWN
    return _CODE_INDEX[code]


def _code_after_return(context: grpc.aio.ServicerContext) -> int:
    code = context.code()
    return _OK if code is None else _CODE_INDEX[code]


async def _request_stream_settled() -> None:
    """Let a cancellation that ended the request stream reach the handler's task.

    When a client cancels, grpc.aio first gives the handler EOF on its request stream (as a
    half-close would) and cancels the handler's task a moment later. A handler that returns on
    EOF would be counted OK; yielding to the loop once lets the cancellation land here, so it
    is counted Canceled as Go counts it. Best effort: a cancellation later than that is OK.
    """
    await asyncio.sleep(0)


class _CountingContext:
    """Wraps a streaming call's context so that `read()`/`write()` style handlers are counted."""

    __slots__ = ("_context", "_stats")

    def __init__(self, context: grpc.aio.ServicerContext, stats: MethodStats):
        self._context = context
        self._stats = stats

    async def read(self):
        message = await self._context.read()
        if message is not grpc.aio.EOF:
            self._stats.received += 1
            self._stats.received_bytes += _raw_size(message)
        return message

    async def write(self, message) -> None:
        await self._context.write(message)
        self._stats.sent += 1
        self._stats.sent_bytes += _raw_size(message)

    def __getattr__(self, name):
        return getattr(self._context, name)


async def _counted_requests(requests: AsyncIterator, stats: MethodStats) -> AsyncIterator:
    async for request in requests:
        stats.received += 1
        stats.received_bytes += _raw_size(request)
        yield request


def _wrap_unary_response(behavior, stats: MethodStats, request_streaming: bool):
    """unary_unary / stream_unary: a coroutine returning one response."""

    async def unary_response(request, context):
        stats.started += 1
        if request_streaming:
            request = _counted_requests(request, stats)
            context = _CountingContext(context, stats)
        else:
            stats.received += 1
            stats.received_bytes += _raw_size(request)
        start = perf_counter()
        try:
            response = await behavior(request, context)
            if request_streaming:
                await _request_stream_settled()
        except BaseException as exc:
            stats.finish(_code_after_exception(exc, context), start)
            raise
        code = _code_after_return(context)
        if code == _OK:
            stats.sent += 1
            stats.sent_bytes += _raw_size(response)
        stats.finish(code, start)
        return response

    return unary_response


def _wrap_stream_writer(behavior, stats: MethodStats, request_streaming: bool):
    """unary_stream / stream_stream handlers that write through context.write()."""

    async def stream_writer(request, context):
        stats.started += 1
        if request_streaming:
            request = _counted_requests(request, stats)
        else:
            stats.received += 1
            stats.received_bytes += _raw_size(request)
        context = _CountingContext(context, stats)
        start = perf_counter()
        try:
            await behavior(request, context)
            if request_streaming:
                await _request_stream_settled()
        except BaseException as exc:
            stats.finish(_code_after_exception(exc, context), start)
            raise
        stats.finish(_code_after_return(context), start)

    return stream_writer


def _wrap_stream_generator(behavior, stats: MethodStats, request_streaming: bool):
    """unary_stream / stream_stream handlers that are async generators."""

    async def stream_generator(request, context):
        stats.started += 1
        if request_streaming:
            request = _counted_requests(request, stats)
        else:
            stats.received += 1
            stats.received_bytes += _raw_size(request)
        context = _CountingContext(context, stats)
        start = perf_counter()
        responses = behavior(request, context)
        try:
            async for response in responses:
                yield response
                # Resumed: grpc.aio has finished writing `response`.
                stats.sent += 1
                stats.sent_bytes += _raw_size(response)
            if request_streaming:
                await _request_stream_settled()
        except BaseException as exc:
            # GeneratorExit: grpc.aio stopped iterating (the call ended while it was writing).
            stats.finish(_code_after_exception(exc, context), start)
            raise
        finally:
            await responses.aclose()  # the handler's own cleanup runs now, not when collected
        stats.finish(_code_after_return(context), start)

    return stream_generator


def _counting_codecs(handler: grpc.RpcMethodHandler, stats: MethodStats) -> dict:
    """The handler's request deserializer and response serializer, wrapped to count the bytes
    they take and return (grpc.aio calls them on the event loop). None stays None: raw bytes."""
    codecs = {}
    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    if deserialize is not None:
        def counting_deserializer(data: bytes):
            stats.received_bytes += len(data)
            return deserialize(data)
        codecs["request_deserializer"] = counting_deserializer
    if serialize is not None:
        def counting_serializer(message) -> bytes:
            data = serialize(message)
            stats.sent_bytes += len(data)
            return data
        codecs["response_serializer"] = counting_serializer
    return codecs


def _wrap(handler: grpc.RpcMethodHandler, stats: MethodStats) -> grpc.RpcMethodHandler:
    """`handler` with its behavior counted into `stats`; unchanged if it is not async.

    grpc.aio picks the calling convention from the behavior's kind (coroutine function, async
    generator function, or sync), so each wrapper has the same kind as what it wraps.
    """
    if not handler.response_streaming:
        field = "stream_unary" if handler.request_streaming else "unary_unary"
        behavior = getattr(handler, field)
        if not inspect.iscoroutinefunction(behavior):
            return handler
        wrapped = _wrap_unary_response(behavior, stats, handler.request_streaming)
    else:
        field = "stream_stream" if handler.request_streaming else "unary_stream"
        behavior = getattr(handler, field)
        if inspect.isasyncgenfunction(behavior):
            wrapped = _wrap_stream_generator(behavior, stats, handler.request_streaming)
        elif inspect.iscoroutinefunction(behavior):
            wrapped = _wrap_stream_writer(behavior, stats, handler.request_streaming)
        else:
            return handler
    return handler._replace(**{field: wrapped}, **_counting_codecs(handler, stats))


def _grpc_type(request_streaming: bool, response_streaming: bool) -> str:
    if request_streaming:
        return BIDI_STREAM if response_streaming else CLIENT_STREAM
    return SERVER_STREAM if response_streaming else UNARY


def _le(bound: float) -> str:
    """A bucket bound as Go prints it: 1 not 1.0."""
    text = repr(float(bound))
    return text[:-2] if text.endswith(".0") else text


class GrpcServerMetrics:
    """Records go-grpc-prometheus's server metrics for the handlers it wraps.

    Apply `wrap` to every handler when it is registered (cluster.grpc_wrapping.WrappingServer);
    it registers itself as a collector in `registry` (default: prometheus_client's global
    REGISTRY), so a registry holds at most one. Handlers must be `async def` coroutines or async
    generators (what grpc.aio servicers are); a synchronous handler is served unmeasured.
    Unknown methods never reach a handler, so they are not counted (grpc answers UNIMPLEMENTED),
    as in Go.
    """

    def __init__(self, registry: CollectorRegistry | None = None,
                 buckets: Iterable[float] = DEFAULT_BUCKETS):
        self._bounds = tuple(sorted(float(b) for b in buckets))
        self._stats: dict[tuple[str, str, str], MethodStats] = {}
        (REGISTRY if registry is None else registry).register(self)

    def wrap(self, handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
        """`handler` (of `full_method`, "/package.Service/Method") with its calls counted."""
        return _wrap(handler, self._method_stats(full_method, handler))

    def _method_stats(self, full_method: str, handler: grpc.RpcMethodHandler) -> MethodStats:
        service, _, method = full_method.lstrip("/").partition("/")
        grpc_type = _grpc_type(handler.request_streaming, handler.response_streaming)
        return self._stats_for(grpc_type, service, method)

    def _stats_for(self, grpc_type: str, service: str, method: str) -> MethodStats:
        key = (grpc_type, service, method)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = MethodStats(grpc_type, service, method, self._bounds)
        return stats

    def initialize(self, services) -> None:
        """Export every method of `services` at zero, for every code, before any call.

        `services` are protobuf ServiceDescriptors (e.g. `rpc_pb2.DESCRIPTOR.services_by_name
        .values()`). This is go-grpc-prometheus's InitializeMetrics, which etcd runs, so that
        rates and absent-series alerts work from the first scrape.
        """
        for service in services:
            for method in service.methods:
                grpc_type = _grpc_type(method.client_streaming, method.server_streaming)
                self._stats_for(grpc_type, service.full_name, method.name).initialized = True

    def describe(self):
        return list(self._families())

    def collect(self):
        return list(self._families(list(self._stats.values())))  # list(): one atomic copy

    def _families(self, all_stats: Iterable[MethodStats] = ()):
        started = CounterMetricFamily(
            "grpc_server_started_total", "Total number of RPCs started on the server.", labels=_LABELS)
        handled = CounterMetricFamily(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=_HANDLED_LABELS)
        received = CounterMetricFamily(
            "grpc_server_msg_received_total", "Total number of RPC stream messages received on the server.",
            labels=_LABELS)
        sent = CounterMetricFamily(
            "grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.",
            labels=_LABELS)
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.", labels=_LABELS)
        bucket_names = [_le(b) for b in self._bounds] + ["+Inf"]
        received_bytes = sent_bytes = 0
        for stats in all_stats:
            labels = list(stats.labels)
            received_bytes += stats.received_bytes
            sent_bytes += stats.sent_bytes
            started.add_metric(labels, stats.started)
            received.add_metric(labels, stats.received)
            sent.add_metric(labels, stats.sent)
            for code, count in enumerate(stats.handled):
                if count or stats.initialized:
                    handled.add_metric([GO_CODE_NAMES[code], *labels], count)
            cumulative, buckets = 0, []
            for name, count in zip(bucket_names, stats.buckets):
                cumulative += count
                buckets.append((name, cumulative))
            seconds.add_metric(labels, buckets, stats.seconds)
        yield from (started, handled, received, sent, seconds)
        yield CounterMetricFamily("etcd_network_client_grpc_received_bytes_total",
                                  "The total number of bytes received from grpc clients.", value=received_bytes)
        yield CounterMetricFamily("etcd_network_client_grpc_sent_bytes_total",
                                  "The total number of bytes sent to grpc clients.", value=sent_bytes)
