"""`ReadIndexBatcher`: linearizable read points, one Raft ReadIndex round per batch of readers.

Contract (event loop only):
- A reader calls `await wait_read_index()` and gets a log index: once the state machine has
  applied it, a read reflects every write acknowledged before the reader arrived.
- Readers join the *pending* round; the first reader of a pending round calls `wake()` (the
  driver's wake-up). Only `issue_pending()` issues rounds; the driver's Ready loop calls it
  before each Ready it takes (so about once per fsync under write load). When no round is *in
  flight* it issues the pending one (`request(ctx)`, the driver's `RawNode.read_index`) and a
  fresh pending round collects later arrivals. At most one round is in flight (as etcd's
  linearizableReadLoop), so every reader that arrives while a round is confirmed, or while the
  loop handles a Ready, shares the next round: on the leader and on followers alike (a
  follower's request is forwarded to the leader by the core, batched the same way).
- Refill gathering: a pending round waits (only while none is in flight) until it holds
  `REFILL_SHARE` of the concurrent readers, or until its gather window has passed, whichever
  comes first. The concurrent readers are estimated as the most readers seen waiting at once
  (pending and in flight together) during the last `PEAK_ROUNDS` rounds: under load, the readers
  a round releases come back with their next read, so rounds grow to most of the concurrent
  readers instead of the few that arrive during one round trip (or the two cohorts that
  alternate when each round takes those that arrived while the other was in flight), and each
  round confirms more reads for the same quorum traffic (fewer rounds: less CPU per read). A
  lone reader (one at a time in the last rounds) never waits. The window
  is `ROUNDS_TO_WINDOW` times the recent round duration (issue to answer), within
  [`MIN_GATHER_WINDOW`, `MAX_GATHER_WINDOW`]: rounds take long when the members are CPU-bound,
  and then readers are served no sooner for issuing rounds sooner (by Little's law their latency
  is concurrency / throughput), while on an idle member a round, and so the window, is short.
  Several round durations, because a CPU-bound member serves the readers a round releases one
  after another, and they come back spread over that time (100 readers on 3 members: 2 rounds'
  time gave 14 reads per round, 4 gave 21, 6 gave 24, at the same throughput; docs/cluster.md).
  When the target is reached the loop is woken at once; otherwise a timer wakes it when the
  window ends.
- The driver calls `on_read_state(ctx, index)` for each `ReadState` of a Ready. The in-flight round
  completes with the first answer to any ctx it was issued under; the next round is issued by
  the loop's next `issue_pending()` (right after the Ready that completed it).
- A round unanswered after `retry_after` seconds is reissued under a new ctx (the request or its
  answer may have been lost with a leader or a dropped message); after `timeout` seconds its
  readers fail with "etcdserver: request timed out".
- `request` raising `RequestDropped` (no leader known) fails the round with "etcdserver: no
  leader"; `fail_all(exc)` (leader change, stop) fails the in-flight and the pending round.
- Counted as etcd counts them: a round reissued or timed out, `count_slow()`
  (etcd_server_slow_read_indexes_total; etcd: "timed out waiting for read index response"); a
  round the core refused to issue, `count_failed()` (etcd_server_read_indexes_failed_total). Both
  are logged as warnings.
A reader that is cancelled leaves its round unaffected (the shared future is shielded).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import struct
import time
from collections import deque
from typing import Callable

from cluster.raft import RequestDropped
from cluster.server import errors as server_errors

from .errors import NO_LEADER

log = logging.getLogger(__name__)

_CTX = struct.Struct(">QQ")
REFILL_SHARE = 0.9  # of the concurrent readers, which a pending round waits for
PEAK_ROUNDS = 4  # rounds over which the most readers waiting at once estimate the concurrency
MIN_GATHER_WINDOW = 0.001  # seconds a pending round may wait for them, at least
MAX_GATHER_WINDOW = 0.05  # ... and at most
ROUNDS_TO_WINDOW = 6.0  # gather window = this × the recent round duration, within those bounds
_SMOOTHING = 0.3  # weight of a new round duration in the moving average


class _Round:
    """Readers confirmed together by one ReadIndex answer."""

    __slots__ = ("future", "readers", "ctxs", "created", "issued", "deadline", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.future: asyncio.Future[int] = loop.create_future()
        self.readers = 0
        self.ctxs: set[bytes] = set()
        self.created = loop.time()
        self.issued = 0.0
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None  # gather wake-up while pending, retry once sent


class ReadIndexBatcher:
    """Batches linearizable reads into ReadIndex rounds (see the module docstring)."""

    def __init__(self, member_id: int, request: Callable[[bytes], None], wake: Callable[[], None], *,
                 retry_after: float, timeout: float, max_gather_window: float = MAX_GATHER_WINDOW,
                 count_round: Callable[[], None] | None = None,
                 count_reads: Callable[[int], None] | None = None,
                 count_slow: Callable[[], None] | None = None,
                 count_failed: Callable[[], None] | None = None):
        self._member_id = member_id
        self._request = request
        self._wake = wake
        self._retry_after = retry_after
        self._timeout = timeout
        self._max_gather_window = max_gather_window
        self._round_seconds = 0.0  # moving average of round durations (issue to answer)
        self._refill_target = 1  # readers a pending round waits for (module docstring)
        self._waiting_peak = 0  # most readers waiting at once since the last round was issued
        self._peaks: deque[int] = deque(maxlen=PEAK_ROUNDS)  # ... for the last rounds
        self._count_round = count_round
        self._count_reads = count_reads
        self._count_slow = count_slow
        self._count_failed = count_failed
        self._seq = itertools.count(1)
        self._pending: _Round | None = None
        self._in_flight: _Round | None = None

    async def wait_read_index(self) -> int:
        """The read index confirming every write acknowledged before this call."""
        rnd = self._pending
        if rnd is None:
            rnd = self._pending = _Round(asyncio.get_running_loop())
        rnd.readers += 1
        waiting = rnd.readers + (self._in_flight.readers if self._in_flight is not None else 0)
        if waiting > self._waiting_peak:
            self._waiting_peak = waiting
        if rnd.readers == 1 or (rnd.readers == self._refill_target and self._in_flight is None):
            self._wake()
        return await asyncio.shield(rnd.future)

    def issue_pending(self) -> None:
        """The driver loop, once per iteration: issue the pending round unless one is in flight
        or it is still gathering (module docstring)."""
        rnd = self._pending
        if self._in_flight is not None or rnd is None:
            return
        if rnd.readers < self._refill_target:
            loop = asyncio.get_running_loop()
            until = rnd.created + self.gather_window()
            if loop.time() < until:
                if rnd.timer is None:
                    rnd.timer = loop.call_at(until, self._wake)
                return
        self._issue_pending()

    def gather_window(self) -> float:
        """Seconds a pending round may wait for its refill target (module docstring)."""
        return min(self._max_gather_window, max(MIN_GATHER_WINDOW, ROUNDS_TO_WINDOW * self._round_seconds))

    def on_read_state(self, ctx: bytes, index: int) -> None:
        """A ReadState from the core: completes the in-flight round if `ctx` is one of its."""
        rnd = self._in_flight
        if rnd is None or ctx not in rnd.ctxs:
            return  # an answer to a round already completed, failed or retried-and-answered
        took = asyncio.get_running_loop().time() - rnd.issued
        self._round_seconds += _SMOOTHING * (took - self._round_seconds)
        self._finish(rnd, index, None)

    def fail_all(self, exc: BaseException) -> None:
        """Fail every waiting reader with `exc` (leadership changed, or the member stops)."""
        rounds = (self._in_flight, self._pending)
        self._pending = None
        self._refill_target = 1
        self._waiting_peak = 0
        self._peaks.clear()
        for rnd in rounds:
            if rnd is not None:
                self._finish(rnd, 0, exc)

    # -- internals ----------------------------------------------------------------------------

    def _issue_pending(self) -> None:
        rnd, self._pending = self._pending, None
        if rnd is None:
            return
        if rnd.timer is not None:
            rnd.timer.cancel()
            rnd.timer = None
        self._in_flight = rnd
        self._peaks.append(self._waiting_peak)
        self._waiting_peak = rnd.readers
        self._refill_target = max(1, math.ceil(REFILL_SHARE * max(self._peaks)))
        rnd.issued = asyncio.get_running_loop().time()
        rnd.deadline = time.monotonic() + self._timeout
        if self._count_reads is not None:
            self._count_reads(rnd.readers)
        self._send(rnd)

    def _send(self, rnd: _Round) -> None:
        ctx = _CTX.pack(self._member_id, next(self._seq))
        rnd.ctxs.add(ctx)
        try:
            self._request(ctx)
        except RequestDropped:
            log.warning("failed to get read index from Raft: no leader", extra={"fields": {
                "readers": rnd.readers}})
            if self._count_failed is not None:
                self._count_failed()
            self._finish(rnd, 0, NO_LEADER)
            return
        if self._count_round is not None:
            self._count_round()
        loop = asyncio.get_running_loop()
        rnd.timer = loop.call_later(self._retry_after, self._retry, rnd)

    def _retry(self, rnd: _Round) -> None:
        if rnd is not self._in_flight:
            return
        timed_out = time.monotonic() >= rnd.deadline
        log.warning("timed out waiting for read index response (local node might have slow network)",
                    extra={"fields": {"readers": rnd.readers, "gave_up": timed_out}})
        if self._count_slow is not None:
            self._count_slow()
        if timed_out:
            self._finish(rnd, 0, server_errors.TIMEOUT)
        else:
            self._send(rnd)

    def _finish(self, rnd: _Round, index: int, exc: BaseException | None) -> None:
        if rnd.timer is not None:
            rnd.timer.cancel()
            rnd.timer = None
        if not rnd.future.done():
            if exc is None:
                rnd.future.set_result(index)
            else:
                rnd.future.set_exception(exc)
                rnd.future.exception()  # readers that were cancelled must not leave it unretrieved
        if rnd is self._in_flight:
            self._in_flight = None
            if self._pending is not None:
                self._wake()  # the loop's next issue_pending() sends it
