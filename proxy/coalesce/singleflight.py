"""Singleflight: concurrent identical calls share one execution.

Used for cache misses of serializable Ranges: while a fill for a cache key is in flight, every
other miss for the same key awaits that fill instead of going upstream.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Hashable, TypeVar

T = TypeVar("T")


def _consume_outcome(fut: asyncio.Future) -> None:
    # Every joiner may have been cancelled (clients gone); read the outcome so that asyncio does
    # not log "exception was never retrieved" for a failure nobody is left to see.
    if not fut.cancelled():
        fut.exception()


class SingleFlight:
    """At most one execution of `fn` per key at a time; callers arriving meanwhile join it.

    Contract:
    - `do(key, fn)` runs `fn()` if no call for `key` is in flight, else awaits the in-flight one.
      Every caller gets the same result or the same exception.
    - `forget(key)` detaches the in-flight call from `key`: it still completes for those who joined
      it, but later callers start a fresh call. The cache uses this when a write invalidates a key
      whose fill is in flight, so that a read arriving after the write never joins a read that
      started before it (read-your-writes).
    - A caller being cancelled does not cancel the shared call.
    - `joined` counts callers that were served by someone else's call.
    """

    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Future] = {}
        self.joined = 0

    def __len__(self) -> int:
        return len(self._calls)

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        fut = self._calls.get(key)
        if fut is not None:
            self.joined += 1
            return await asyncio.shield(fut)
        fut = asyncio.ensure_future(fn())
        fut.add_done_callback(_consume_outcome)
        self._calls[key] = fut
        fut.add_done_callback(lambda f, key=key: self._done(key, f))
        return await asyncio.shield(fut)

    def forget(self, key: Hashable) -> None:
        self._calls.pop(key, None)

    def forget_all(self) -> None:
        self._calls.clear()

    def _done(self, key: Hashable, fut: asyncio.Future) -> None:
        if self._calls.get(key) is fut:
            del self._calls[key]
