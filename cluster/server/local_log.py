"""`LocalLog`: the single-member ReplicatedLog, an append-only log with one fsync per batch.

Files: `LogSegments` (log_segments.py), in the directory given. Tasks (both on the member's
event loop):
- the writer takes everything proposed so far as one batch, writes and fdatasyncs it on the
  `wal` worker thread, marks it committed and queues it for apply. Proposals arriving during the
  fsync wait for the next batch: natural batching, one fsync for many writes. When old segments
  exist, it asks the state machine to make its applied state durable (`make_applied_durable`,
  on the worker thread) and deletes the segments that state covers.
- the applier hands committed batches to the apply callback in order, one at a time, and then
  releases the read barriers the batch satisfies. Apply of batch N overlaps fsync of batch N+1.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from . import errors
from .log_segments import SEGMENT_BYTES, LogSegments, encode_record
from .seam import ApplyCallback, Entry

log = logging.getLogger(__name__)

_REPLAY_CHUNK = 512  # entries per apply call during recovery


class LocalLog:
    """ReplicatedLog for one member: durable at fsync, committed at once, always its own leader.
    Its term is one more than the last logged entry's at every start (a restart is an election)."""

    def __init__(self, directory: str, member_id: int, *,
                 observe_fsync: Callable[[float], None] | None = None,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 make_applied_durable: Callable[[], None] | None = None,
                 segment_bytes: int = SEGMENT_BYTES):
        """`observe_fsync(seconds)` is called on the loop after each fsync (a metric);
        `on_fatal(exc)` when the log cannot be written (the member must stop, as etcd does);
        `make_applied_durable()` (blocking; None = never delete old segments) must persist the
        state machine's state up to the applied index it had when called."""
        self.directory = directory
        self.member_id = member_id
        self._observe_fsync = observe_fsync
        self._on_fatal = on_fatal
        self._make_applied_durable = make_applied_durable
        self._segments = LogSegments(directory, segment_bytes)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal")
        self._pending: list[bytes] = []
        self._wake_writer = asyncio.Event()
        self._to_apply: list[Entry] = []
        self._wake_applier = asyncio.Event()
        self._barriers: list[tuple[int, asyncio.Future]] = []
        self._last_index = 0
        self._term = 0
        self._committed = 0
        self._applied = 0
        self._stopped = True
        self._tasks: list[asyncio.Task] = []
        self._apply: ApplyCallback | None = None

    # -- ReplicatedLog -------------------------------------------------------------------------

    async def start(self, apply: ApplyCallback, applied_index: int) -> None:
        loop = asyncio.get_running_loop()
        replay, last_entry = await loop.run_in_executor(self._io, self._segments.recover, applied_index)
        self._apply = apply
        last = last_entry.index if last_entry else 0
        log.info("wal recovered", extra={"fields": {
            "dir": self.directory, "segments": self._segments.segment_count, "last_index": last,
            "applied_index": applied_index, "replaying": len(replay)}})
        for i in range(0, len(replay), _REPLAY_CHUNK):
            await apply(replay[i:i + _REPLAY_CHUNK])
        # An empty or shorter file than the store (e.g. a data dir restored without its log)
        # continues after the store's index, so that indices stay increasing.
        self._last_index = self._committed = self._applied = max(last, applied_index)
        # Each start is a new term with an empty first entry, as a newly elected Raft leader
        # appends: a serving member has always applied at least one entry of its term.
        self._term = (last_entry.term if last_entry else 0) + 1
        noop = Entry(self._last_index + 1, self._term, b"")
        await loop.run_in_executor(self._io, self._segments.append, encode_record(noop), noop.index)
        await apply([noop])
        self._last_index = self._committed = self._applied = noop.index
        self._stopped = False
        self._tasks = [asyncio.create_task(self._write_loop(), name="wal-writer"),
                       asyncio.create_task(self._apply_loop(), name="wal-applier")]

    def propose(self, data: bytes) -> None:
        if self._stopped:
            raise errors.STOPPED
        self._pending.append(data)
        self._wake_writer.set()

    async def read_barrier(self) -> None:
        target = self._committed
        if self._applied >= target:
            return
        fut = asyncio.get_running_loop().create_future()
        self._barriers.append((target, fut))
        await fut

    async def stop(self) -> None:
        self._stopped = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        for _, fut in self._barriers:
            if not fut.done():
                fut.set_exception(errors.STOPPED)
        self._barriers = []
        await asyncio.get_running_loop().run_in_executor(self._io, self._segments.close)
        self._io.shutdown(wait=True)

    @property
    def committed_index(self) -> int:
        return self._committed

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def last_index(self) -> int:
        return self._last_index

    @property
    def term(self) -> int:
        return self._term

    @property
    def leader_id(self) -> int:
        return self.member_id

    # -- internals -----------------------------------------------------------------------------

    def _purge_applied(self, applied_index: int) -> None:
        """Worker thread: make the state machine durable up to `applied_index`, then delete the
        segments it covers."""
        self._make_applied_durable()
        if self._segments.purge(applied_index):
            log.info("wal: purged segments", extra={"fields": {"upto_index": applied_index}})

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake_writer.wait()
                self._wake_writer.clear()
                batch, self._pending = self._pending, []
                if not batch:
                    continue
                first = self._last_index + 1
                entries = [Entry(first + i, self._term, d) for i, d in enumerate(batch)]
                self._last_index = entries[-1].index
                blob = b"".join(encode_record(e) for e in entries)
                fsync_seconds = await loop.run_in_executor(self._io, self._segments.append, blob, first)
                if self._observe_fsync is not None:
                    self._observe_fsync(fsync_seconds)
                self._committed = self._last_index
                self._to_apply.extend(entries)
                self._wake_applier.set()
                oldest_end = self._segments.oldest_segment_end
                if oldest_end is not None and self._applied >= oldest_end and self._make_applied_durable:
                    await loop.run_in_executor(self._io, self._purge_applied, self._applied)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a WAL that cannot be written is fatal, as in etcd
            log.critical("wal write failed", extra={"fields": {"error": repr(exc)}})
            self._stopped = True
            if self._on_fatal is not None:
                self._on_fatal(exc)
            raise

    async def _apply_loop(self) -> None:
        try:
            while True:
                await self._wake_applier.wait()
                self._wake_applier.clear()
                batch, self._to_apply = self._to_apply, []
                if not batch:
                    continue
                await self._apply(batch)
                self._applied = batch[-1].index
                self._release_barriers()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # an entry that cannot be applied: stop, as etcd panics
            log.critical("apply failed", extra={"fields": {"error": repr(exc)}})
            self._stopped = True
            if self._on_fatal is not None:
                self._on_fatal(exc)
            raise

    def _release_barriers(self) -> None:
        if not self._barriers:
            return
        keep = []
        for target, fut in self._barriers:
            if target <= self._applied:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((target, fut))
        self._barriers = keep
