"""Coalescing of identical linearizable reads: they share the *next* upstream call.

Per key there is at most one upstream call in flight and one batch waiting. A reader that arrives
while a call is in flight joins the waiting batch; when the in-flight call finishes, the waiting
batch is closed and its call is issued, and every reader in it gets that call's answer. A reader
that arrives when nothing is in flight starts a call at once (a batch of one).

Why this is linearizable (the proof the design relies on):
  Let reader r arrive at time a_r and be answered at time e_r. r belongs to batch B, whose
  upstream call U_B is issued at time s_B and answered at time f_B. The cluster's read is
  linearizable, so U_B takes effect at one instant L_B with s_B <= L_B <= f_B, and its answer
  reflects every write acknowledged before s_B (and possibly some later ones, but none that
  follow L_B).
  1. s_B >= a_r: a batch's call is issued only when the batch is closed, and a reader can only
     join a batch that is not closed yet, so every member arrived before the call was issued.
  2. f_B <= e_r: r is answered with U_B's result, which exists only once U_B has returned.
  Hence a_r <= s_B <= L_B <= f_B <= e_r: the linearization point of the upstream read lies inside
  r's own real-time interval, so r may take L_B as its own linearization point. In particular r
  observes every write acknowledged before a_r. Sharing an in-flight call that started *before*
  r arrived would break (1), which is why a reader never joins the in-flight call.

Pacing (hot-key protection): per key, a call is issued at least `min_interval` seconds after the
previous one was issued (and never while one is in flight). A reader arriving inside that window
joins the waiting batch, which is issued when the window ends. So one hot key costs the cluster at
most 1/min_interval linearizable reads per second per proxy worker, however many clients hammer
it; the batch simply stays open longer and gathers more readers. Pacing only delays the issue of a
call, after all its readers arrived, so the proof above is untouched. A read of a key that was not
read upstream within the last `min_interval` is issued at once: only hot keys pay the delay.

Bounded: at most one in-flight call and one waiting batch per key, whatever the number of readers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Hashable, TypeVar

T = TypeVar("T")


class _Batch:
    __slots__ = ("future", "call")

    def __init__(self, future: asyncio.Future, call: Callable[[], Awaitable]):
        self.future = future
        self.call = call  # the first member's call; every member of a batch asks the same thing


class _KeyState:
    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting: _Batch | None = None


class LinearizableReadCoalescer:
    """Identical linearizable reads share the next upstream call issued after all of them arrived.

    `read(key, call)`: `key` identifies "identical" (request bytes + caller identity); `call` makes
    the upstream read. `joined` counts readers served by a call another reader caused;
    `calls` counts upstream calls made. `min_interval`: see "Pacing" above (0 = none).
    """

    def __init__(self, min_interval: float = 0.0) -> None:
        self.min_interval = min_interval
        self._keys: dict[Hashable, _KeyState] = {}
        self.joined = 0
        self.calls = 0

    async def read(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        state = self._keys.get(key)
        if state is None:
            # Not read upstream within min_interval: a batch of one, issued at once by a new driver.
            state = self._keys[key] = _KeyState()
            batch = state.waiting = _Batch(asyncio.get_running_loop().create_future(), call)
            asyncio.get_running_loop().create_task(self._drive(key, state))
        elif state.waiting is None:
            # A call is in flight (or was issued less than min_interval ago): open the next batch;
            # the driver issues it when that call has ended and the interval has passed.
            batch = state.waiting = _Batch(asyncio.get_running_loop().create_future(), call)
        else:
            batch = state.waiting
            self.joined += 1
        return await asyncio.shield(batch.future)

    async def _drive(self, key: Hashable, state: _KeyState) -> None:
        last_issued = None
        try:
            while True:
                if last_issued is not None and self.min_interval > 0:
                    delay = last_issued + self.min_interval - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)  # the waiting batch (if any) stays open meanwhile
                if state.waiting is None:
                    break
                batch, state.waiting = state.waiting, None  # close the batch, then issue its call
                last_issued = time.monotonic()
                self.calls += 1
                try:
                    result = await batch.call()
                except asyncio.CancelledError:
                    batch.future.cancel()
                    raise
                except Exception as exc:  # noqa: BLE001 - handed to every member of the batch
                    batch.future.set_exception(exc)
                    batch.future.exception()  # retrieved here: members may all be gone
                else:
                    batch.future.set_result(result)
        finally:
            del self._keys[key]
            if state.waiting is not None:  # only when the driver itself was cancelled (shutdown)
                state.waiting.future.cancel()
