"""`RequestWait`: proposal id -> the future its proposer awaits. Event-loop only."""

from __future__ import annotations

import asyncio
import itertools
import time


class RequestIdGenerator:
    """Unique request (and lease) ids, as etcd's idutil.Generator: 2 bytes of member id, then a
    millisecond timestamp taken at start and incremented per id, so ids from one member never
    repeat across restarts (unless more than one id per ms is sustained for the whole downtime)."""

    def __init__(self, member_id: int):
        prefix = (member_id & 0xFFFF) << 48
        start = (int(time.time() * 1000) << 8) & ((1 << 48) - 1)
        self._counter = itertools.count(start)
        self._prefix = prefix

    def next(self) -> int:
        return self._prefix | (next(self._counter) & ((1 << 48) - 1))


class RequestWait:
    """Registry of proposals in flight. `register` before proposing; the apply path calls
    `trigger` with each applied entry's outcome (unknown ids are ignored: replayed entries, or
    proposers that gave up). `expire` fails the proposals registered before a deadline: one
    periodic sweep replaces a timer per request."""

    def __init__(self) -> None:
        # insertion order = registration order, which `expire` relies on
        self._waiting: dict[int, tuple[asyncio.Future, float]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def register(self, request_id: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = (fut, time.monotonic())
        return fut

    def forget(self, request_id: int) -> None:
        self._waiting.pop(request_id, None)

    def trigger(self, request_id: int, result: object) -> None:
        """Resolve the proposer of `request_id`: with `result`, or raise it if an exception."""
        waiting = self._waiting.pop(request_id, None)
        if waiting is None or waiting[0].done():
            return
        if isinstance(result, BaseException):
            waiting[0].set_exception(result)
        else:
            waiting[0].set_result(result)

    def expire(self, registered_before: float, exc: BaseException) -> int:
        """Fail every proposal registered before `registered_before` (monotonic); returns how many."""
        expired = []
        for request_id, (fut, registered) in self._waiting.items():
            if registered >= registered_before:
                break
            expired.append(request_id)
        for request_id in expired:
            fut, _ = self._waiting.pop(request_id)
            if not fut.done():
                fut.set_exception(exc)
        return len(expired)

    def fail_all(self, exc: BaseException) -> None:
        waiting, self._waiting = self._waiting, {}
        for fut, _ in waiting.values():
            if not fut.done():
                fut.set_exception(exc)
