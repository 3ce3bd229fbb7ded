"""KeyspaceWatchInvalidator: the one upstream watch that keeps a CoherentRangeCache coherent.

Contract:
- One watch stream over the whole keyspace this proxy serves (the namespace's prefix range, or
  every key), started at the current revision. Its `created` answer makes the cache coherent from
  that revision on (`mark_coherent`); every event invalidates its key at its mod revision,
  whoever made the write. After each response's invalidations, the revision up to which every
  write has been applied is reported (`watch_progress`): hits are answered with it as their header
  revision.
- The watch ending for any reason (stream error, cancel, compaction, upstream failover) flushes
  the cache first, then a new watch is established (with backoff). There is no attempt to resume
  from the last revision: a flush is always correct, and a resumed watch could miss a compaction.
- Upstream auth: the watch is made as the user given by `--cache-user USER:PASSWORD` (which needs
  read permission on the whole served range), or anonymously. If the cluster refuses it (auth
  enabled, no or insufficient user), the cache never becomes coherent and every serializable read
  goes upstream, coalesced by singleflight. This is logged once per distinct error.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from protos.etcdserverpb import rpc_pb2

from ..namespace import Namespace, prefix_range_end
from ..upstream import Upstream
from .range_cache import CoherentRangeCache

log = logging.getLogger("kvproxy.cache")

_BACKOFF_START = 0.05
_BACKOFF_MAX = 2.0


class KeyspaceWatchInvalidator:
    """Runs the keyspace watch as a task; `start()` and `await close()`."""

    def __init__(self, upstream: Upstream, namespace: Namespace, cache: CoherentRangeCache,
                 credentials: tuple[str, str] | None = None):
        self._upstream = upstream
        self._credentials = credentials
        self._ns = namespace
        self._cache = cache
        self._task: asyncio.Task | None = None
        self._call = None
        self.established = asyncio.Event()
        self.events_seen = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="keyspace-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._cache.flush()

    def _create_request(self) -> rpc_pb2.WatchRequest:
        if self._ns.active:
            key, end = self._ns.prefix, prefix_range_end(self._ns.prefix)
        else:
            key, end = b"\0", b"\0"
        return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key, range_end=end))

    async def _run(self) -> None:
        backoff = _BACKOFF_START
        last_error = None
        while True:
            try:
                await self._watch_once()
                reason = "watch ended"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                reason = f"{e.code().name}: {e.details()}"
            except Exception as e:  # noqa: BLE001 - any failure means: flush, then retry
                reason = repr(e)
            was_established = self.established.is_set()
            self.established.clear()
            self._cache.flush()
            if reason != last_error:
                log.warning("keyspace watch lost (%s); cache flushed, re-establishing", reason)
                last_error = reason
            await asyncio.sleep(backoff)
            backoff = _BACKOFF_START if was_established else min(backoff * 2, _BACKOFF_MAX)

    async def _authenticate(self, name: str, password: str) -> str:
        """A token for the watch; '' when the cluster has auth off (then no token is needed)."""
        try:
            auth = await self._upstream.auth.Authenticate(
                rpc_pb2.AuthenticateRequest(name=name, password=password), timeout=5, wait_for_ready=True)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:  # etcdserver: authentication is not enabled
                return ""
            raise
        return auth.token

    async def _watch_once(self) -> None:
        metadata = [("hasleader", "true")]
        if self._credentials is not None:
            token = await self._authenticate(*self._credentials)
            if token:
                metadata.append(("token", token))
        call = self._upstream.watch.Watch(metadata=tuple(metadata), wait_for_ready=True)
        try:
            await call.write(self._create_request())
            strip = self._ns.strip
            invalidate = self._cache.invalidate_key
            async for resp in call:
                if resp.created:
                    if resp.canceled:
                        raise RuntimeError(f"watch refused: {resp.cancel_reason}")
                    self._cache.note_header(resp.header)
                    self._cache.mark_coherent(resp.header.revision)
                    self.established.set()
                    log.info("keyspace watch established at revision %d", resp.header.revision)
                    continue
                if resp.canceled or resp.compact_revision:
                    return
                events = resp.events
                for ev in events:
                    invalidate(strip(ev.kv.key), ev.kv.mod_revision)
                self.events_seen += len(events)
                # Every write up to this response is now applied: the cache's W (see
                # range_cache invariant 5). A response with events counts up to its last event's
                # revision (a catch-up response's header may be ahead of the events it carries);
                # one without (progress) up to its header revision.
                self._cache.note_header(resp.header)
                self._cache.watch_progress(events[-1].kv.mod_revision if events else resp.header.revision)
        finally:
            call.cancel()
