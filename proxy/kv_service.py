"""The proxy's KV service: cached serializable reads, coalesced linearizable reads, write-through.

Request routing:
- Range, serializable: the cache (proxy/cache). The cache key is the request's bytes as the client
  sent them plus the caller's token, so the hit path parses nothing: raw bytes in, a dict lookup,
  the cached serialized response out (the handler is registered with identity (de)serializers),
  with the header revision W up to which the keyspace watch has applied every write.
  A miss is parsed, coalesced with identical concurrent misses (SingleFlight) and filled upstream.
  Header revisions never go backwards: no answer is older than the cache's floor (the highest
  revision served or known committed) when the request arrived. A hit needs W >= floor; otherwise
  it waits up to WATCH_WAIT_S for the watch, then reads upstream. A fresh answer older than that
  floor (a lagging member, or a shared fill that began earlier) is replaced by a linearizable read.
- Range, linearizable: never cached; identical reads share the next upstream call
  (LinearizableReadCoalescer).
- Put, DeleteRange, Txn: forwarded; once the cluster acknowledged the write, the ranges it touched
  are invalidated up to its header revision (read-your-writes through this proxy), before the
  client gets the answer. The keyspace watch invalidates them again, and catches everyone else's
  writes.
- Compact: forwarded; then revision-pinned entries older than the compaction are dropped.

Identity: the cluster checks permissions; the proxy cannot verify a token, so it keys the cache by
the token string itself. A cached answer is only ever served to a caller presenting the same token
(or to anonymous callers, for answers fetched anonymously). The namespace is fixed per process, so
it needs no place in the key. A token's cached answers are served only while the cluster accepted
that token within the last TOKEN_FRESH_S seconds; otherwise the read goes upstream (a re-check,
not counted as a cache miss), so a revoked role, a changed password or an expired token shows
through the cache within that time.

Errors: upstream failures pass through with their status code and message unchanged; requests that
do not parse get what grpc-go (hence etcd) answers: INTERNAL "grpc: error unmarshalling request: ...".
"""

from __future__ import annotations

from typing import Callable

import cachetools
import grpc
from google.protobuf.message import DecodeError

from protos.etcdserverpb import rpc_pb2

from .admission import TOO_MANY_REQUESTS, AdmissionControl, Refusal
from .cache.range_cache import CoherentRangeCache
from .coalesce.linearizable import LinearizableReadCoalescer
from .coalesce.singleflight import SingleFlight
from .metrics import ProxyMetrics
from .namespace import Namespace
from .upstream import FORWARDED_METADATA_KEYS, Upstream

SERVICE = "etcdserverpb.KV"

# Upstream calls wait for a connection (wait_for_ready), as etcd's clientv3 does, so a client
# sees a failover or a brief outage as latency, bounded by its own deadline. A call shared by
# several clients (singleflight, linearizable batch) cannot take any one client's deadline; it
# gets this bound instead (each client still gives up at its own deadline).
SHARED_CALL_TIMEOUT_S = 10.0

# A hit whose entry is valid but whose watch revision W is behind the floor (a newer answer was
# served, or a write acknowledged, before the watch reported it) waits this long for the watch
# before reading upstream (see the range-cache invariant 5).
WATCH_WAIT_S = 0.05

_RangeRequest = rpc_pb2.RangeRequest
_RangeResponse = rpc_pb2.RangeResponse


def _identity(b: bytes) -> bytes:
    return b


async def abort_with_upstream_error(context: grpc.aio.ServicerContext, err: grpc.aio.AioRpcError):
    """Answer the client with the cluster's status code and message, unchanged."""
    await context.abort(err.code(), err.details() or "")


async def parse_request(cls, raw: bytes, context: grpc.aio.ServicerContext):
    try:
        return cls.FromString(raw)
    except DecodeError as e:
        await context.abort(grpc.StatusCode.INTERNAL, f"grpc: error unmarshalling request: {e}")


def caller_token(md) -> str:
    """The caller's auth token from its invocation metadata, '' when anonymous."""
    if md:
        for k, v in md:
            if k == "token" or k == "authorization":
                return v
    return ""


def forwarded(md) -> tuple[tuple[str, str], ...]:
    """The part of the invocation metadata that goes upstream (see proxy.upstream)."""
    if not md:
        return ()
    return tuple((k, v) for k, v in md if k in FORWARDED_METADATA_KEYS)


def _written_ranges(ops, out: list) -> list:
    """Client-space (key, range_end) of every write in a list of RequestOps, nested txns included."""
    for op in ops:
        which = op.WhichOneof("request")
        if which == "request_put":
            out.append((op.request_put.key, b""))
        elif which == "request_delete_range":
            out.append((op.request_delete_range.key, op.request_delete_range.range_end))
        elif which == "request_txn":
            _written_ranges(op.request_txn.success, out)
            _written_ranges(op.request_txn.failure, out)
    return out


class KVProxy:
    """The KV service of the proxy; see the module docstring for the routing of each method."""

    # token -> accepted upstream within TOKEN_FRESH_S (see the module docstring)
    TOKEN_FRESH_S = 1.0

    def __init__(self, upstream: Upstream, namespace: Namespace, metrics: ProxyMetrics,
                 admission: AdmissionControl | None = None, *,
                 cache_max_entries: int = 100_000, cache_max_bytes: int = 256 * 1024 * 1024,
                 linearizable_read_interval: float = 0.025):
        self._upstream = upstream
        self._ns = namespace
        self._metrics = metrics
        self._admission = admission or AdmissionControl()
        self.singleflight = SingleFlight()
        self.linearizable = LinearizableReadCoalescer(linearizable_read_interval)
        self.cache = CoherentRangeCache(cache_max_entries, cache_max_bytes, detach=self.singleflight.forget)
        self._watch_stalled_at = -1  # W when a wait for the watch last timed out: do not wait again at it
        self._fresh_tokens = cachetools.TTLCache(100_000, self.TOKEN_FRESH_S)
        # Raw-bytes upstream Range: a request that needs no namespace rewriting is forwarded as the
        # client sent it, and a linearizable answer goes back without being parsed.
        self._raw_range = upstream.channel.unary_unary(
            "/etcdserverpb.KV/Range", request_serializer=_identity, response_deserializer=_identity)
        metrics.watch_cache(lambda: (len(self.cache), self.cache.size_bytes, self.cache.flushes,
                                     self.cache.coherent))
        metrics.watch_coalesced("singleflight", lambda: self.singleflight.joined)
        metrics.watch_coalesced("linearizable", lambda: self.linearizable.joined)

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """Handlers for grpc's server, all with raw bytes in and out."""

        def unary(fn: Callable) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=None, response_serializer=None)

        return {
            "Range": unary(self.range),
            "Put": unary(self.put),
            "DeleteRange": unary(self.delete_range),
            "Txn": unary(self.txn),
            "Compact": unary(self.compact),
        }

    # --- Range --------------------------------------------------------------------------------

    async def range(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # THE hot path: keep it to a metadata scan, one lookup and a counter.
        md = context.invocation_metadata()
        token = caller_token(md)
        cache_key = (raw, token) if token else raw
        if self._admission.enabled:
            await self._admit(context, raw=raw)
        cache = self.cache
        cached = cache.get(cache_key)
        recheck = False  # a cached answer, but its token must be re-checked upstream first
        if cached and token and token not in self._fresh_tokens:
            cached, recheck = None, True
        if cached:
            self._metrics.cache_hits += 1
            return cached
        # Never answer older than what was served before this request arrived (DESIGN.md).
        at_least = cache.floor
        if cached is not None:
            # STALE: cached, but the keyspace watch has not yet reached a revision already served
            # (a fresh answer or a write through this proxy was newer). Wait for the watch briefly;
            # if it does not get there (e.g. writes outside the namespace advance the revision
            # without events), read upstream instead, and stop waiting until the watch moves.
            if cache.watch_rev != self._watch_stalled_at:
                if await cache.wait_watch(at_least, WATCH_WAIT_S):
                    cached = cache.get_as_of(cache_key, at_least)
                    if cached:
                        self._metrics.cache_hits += 1
                        return cached
                else:
                    self._watch_stalled_at = cache.watch_rev
        req = await parse_request(_RangeRequest, raw, context)
        forward = forwarded(md)
        try:
            if not req.serializable:
                return await self.linearizable.read(
                    cache_key, lambda: self._linearizable_range(req, raw, forward))
            if not recheck:
                self._metrics.cache_misses += 1
            data, revision = await self.singleflight.do(
                cache_key, lambda: self._fill(cache_key, req, raw, forward))
            if token:
                self._fresh_tokens[token] = True
            if revision < at_least:
                # The shared fill began before this request arrived and a newer answer was served
                # meanwhile: read again, linearizably (at least as new as anything served).
                data, revision = await self._fresh_range(req, forward)
                cache.served(revision)
            return data
        except grpc.aio.AioRpcError as e:
            await abort_with_upstream_error(context, e)

    async def _linearizable_range(self, req, raw: bytes, forward) -> bytes:
        self._metrics.upstream_requests["Range"] += 1
        if not self._ns.active:
            return await self._raw_range(raw, metadata=forward, wait_for_ready=True,
                                         timeout=SHARED_CALL_TIMEOUT_S)
        return (await self._namespaced_range(req, forward)).SerializeToString()

    async def _namespaced_range(self, req, forward) -> _RangeResponse:
        up = _RangeRequest()
        up.CopyFrom(req)
        self._ns.map_range_request(up)
        resp = await self._upstream.kv.Range(up, metadata=forward, wait_for_ready=True,
                                             timeout=SHARED_CALL_TIMEOUT_S)
        self._ns.strip_range_response(resp)
        return resp

    async def _upstream_range(self, req, raw: bytes, forward) -> tuple[bytes, _RangeResponse]:
        """(serialized client-space answer, the same parsed)."""
        self._metrics.upstream_requests["Range"] += 1
        if not self._ns.active:
            data = await self._raw_range(raw, metadata=forward, wait_for_ready=True,
                                         timeout=SHARED_CALL_TIMEOUT_S)
            return data, _RangeResponse.FromString(data)
        resp = await self._namespaced_range(req, forward)
        return resp.SerializeToString(), resp

    async def _fresh_range(self, req, forward) -> tuple[bytes, int]:
        """A linearizable read of `req`: at least as new as anything committed before it."""
        fresh = _RangeRequest()
        fresh.CopyFrom(req)
        fresh.serializable = False
        data, resp = await self._upstream_range(fresh, fresh.SerializeToString(), forward)
        return data, resp.header.revision

    async def _fill(self, cache_key, req, raw: bytes, forward) -> tuple[bytes, int]:
        """(answer, its header revision); the answer is inserted in the cache if allowed."""
        cache = self.cache
        fill = cache.begin_fill(cache_key, req.key, req.range_end, req.revision if req.revision > 0 else 0)
        try:
            data, resp = await self._upstream_range(req, raw, forward)
            revision = resp.header.revision
            if revision < fill.floor:
                # The member that answered lags behind what this proxy already served or saw
                # committed (e.g. just after failover): serving it would move time backwards.
                # A linearizable read is at least as new as anything committed before it.
                data, revision = await self._fresh_range(req, forward)
            else:
                cache.note_header(resp.header)
                resp.ClearField("header")
                cache.insert(fill, resp.SerializeToString(), revision)
            cache.served(revision)
            return data, revision
        finally:
            cache.end_fill(fill)

    # --- writes -------------------------------------------------------------------------------

    async def put(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        req = await parse_request(rpc_pb2.PutRequest, raw, context)
        if self._admission.enabled:
            await self._admit(context, key=req.key)
        key = req.key
        self._ns.map_put_request(req)
        resp = await self._forward(self._upstream.kv.Put, "Put", req, context)
        self.cache.invalidate_key(key, resp.header.revision)
        self._ns.strip_put_response(resp)
        return resp.SerializeToString()

    async def delete_range(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        req = await parse_request(rpc_pb2.DeleteRangeRequest, raw, context)
        if self._admission.enabled:
            await self._admit(context, key=req.key)
        key, end = req.key, req.range_end
        self._ns.map_delete_request(req)
        resp = await self._forward(self._upstream.kv.DeleteRange, "DeleteRange", req, context)
        self.cache.invalidate_range(key, end, resp.header.revision)
        self._ns.strip_delete_response(resp)
        return resp.SerializeToString()

    async def txn(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        req = await parse_request(rpc_pb2.TxnRequest, raw, context)
        if self._admission.enabled:
            await self._admit(context)
        # Both branches: which one ran is in the answer, but over-invalidating is always safe.
        written = _written_ranges(req.failure, _written_ranges(req.success, []))
        self._ns.map_txn_request(req)
        resp = await self._forward(self._upstream.kv.Txn, "Txn", req, context)
        for key, end in written:
            self.cache.invalidate_range(key, end, resp.header.revision)
        self._ns.strip_txn_response(resp)
        return resp.SerializeToString()

    async def compact(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        req = await parse_request(rpc_pb2.CompactionRequest, raw, context)
        if self._admission.enabled:
            await self._admit(context)
        resp = await self._forward(self._upstream.kv.Compact, "Compact", req, context)
        self.cache.evict_compacted(req.revision)
        return resp.SerializeToString()

    async def _forward(self, method, name: str, req, context: grpc.aio.ServicerContext):
        forward = forwarded(context.invocation_metadata())
        self._metrics.upstream_requests[name] += 1
        try:
            return await method(req, metadata=forward, timeout=context.time_remaining(), wait_for_ready=True)
        except grpc.aio.AioRpcError as e:
            await abort_with_upstream_error(context, e)

    # --- admission ----------------------------------------------------------------------------

    async def _admit(self, context: grpc.aio.ServicerContext, *, raw: bytes | None = None,
                     key: bytes | None = None) -> None:
        adm = self._admission
        try:
            if adm.per_client:
                adm.admit_client(context.peer())
            if adm.per_key:
                if raw is not None:
                    key = (await parse_request(_RangeRequest, raw, context)).key
                if key is not None:
                    adm.admit_key(key)
        except Refusal as r:
            self._metrics.admission_rejected[r.limit] += 1
            context.set_trailing_metadata((("kvproxy-admission", r.reason),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, TOO_MANY_REQUESTS)
