"""SingleFlight and LinearizableReadCoalescer on a real event loop, with scripted upstream calls."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.coalesce.linearizable import LinearizableReadCoalescer
from proxy.coalesce.singleflight import SingleFlight


class ScriptedUpstream:
    """Upstream calls that stay in flight until the test releases them; records issue order."""

    def __init__(self):
        self.issued: list[asyncio.Future] = []

    def call(self):
        async def run():
            fut = asyncio.get_running_loop().create_future()
            self.issued.append(fut)
            return await fut

        return run

    async def wait_issued(self, n: int):
        while len(self.issued) < n:
            await asyncio.sleep(0)


def test_singleflight_shares_one_call():
    async def main():
        sf, up = SingleFlight(), ScriptedUpstream()
        readers = [asyncio.create_task(sf.do("k", up.call())) for _ in range(10)]
        await up.wait_issued(1)
        await asyncio.sleep(0)
        up.issued[0].set_result("v")
        assert await asyncio.gather(*readers) == ["v"] * 10
        assert len(up.issued) == 1 and sf.joined == 9 and len(sf) == 0

    asyncio.run(main())


def test_singleflight_error_reaches_everyone_and_forget_starts_fresh():
    async def main():
        sf, up = SingleFlight(), ScriptedUpstream()
        first = [asyncio.create_task(sf.do("k", up.call())) for _ in range(3)]
        await up.wait_issued(1)
        sf.forget("k")
        second = asyncio.create_task(sf.do("k", up.call()))
        await up.wait_issued(2)
        up.issued[0].set_exception(RuntimeError("boom"))
        up.issued[1].set_result("fresh")
        results = await asyncio.gather(*first, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert await second == "fresh"

    asyncio.run(main())


def test_singleflight_caller_cancel_does_not_cancel_the_call():
    async def main():
        sf, up = SingleFlight(), ScriptedUpstream()
        a = asyncio.create_task(sf.do("k", up.call()))
        b = asyncio.create_task(sf.do("k", up.call()))
        await up.wait_issued(1)
        a.cancel()
        await asyncio.sleep(0)
        up.issued[0].set_result("v")
        assert await b == "v"

    asyncio.run(main())


def test_linearizable_readers_join_the_next_call_not_the_one_in_flight():
    async def main():
        co, up = LinearizableReadCoalescer(), ScriptedUpstream()
        r0 = asyncio.create_task(co.read("k", up.call()))
        await up.wait_issued(1)
        # Arrive while call 0 is in flight: must not get call 0's answer.
        later = [asyncio.create_task(co.read("k", up.call())) for _ in range(50)]
        await asyncio.sleep(0)
        assert len(up.issued) == 1  # the next call waits for the in-flight one
        up.issued[0].set_result("before")
        assert await r0 == "before"
        await up.wait_issued(2)
        up.issued[1].set_result("after")
        assert await asyncio.gather(*later) == ["after"] * 50
        assert co.calls == 2 and co.joined == 49

    asyncio.run(main())


def test_linearizable_at_most_one_in_flight_and_one_waiting():
    async def main():
        co, up = LinearizableReadCoalescer(), ScriptedUpstream()
        tasks = []
        for round_ in range(5):
            tasks += [asyncio.create_task(co.read("k", up.call())) for _ in range(10)]
            await up.wait_issued(round_ + 1)
            await asyncio.sleep(0)
            assert len(up.issued) == round_ + 1
            up.issued[round_].set_result(round_)
        # drive remaining batches
        while not all(t.done() for t in tasks):
            for fut in up.issued:
                if not fut.done():
                    fut.set_result("tail")
            await asyncio.sleep(0)
        assert co.calls <= 6

    asyncio.run(main())


def test_linearizable_error_is_shared_by_the_batch_only():
    async def main():
        co, up = LinearizableReadCoalescer(), ScriptedUpstream()
        r0 = asyncio.create_task(co.read("k", up.call()))
        await up.wait_issued(1)
        batch = [asyncio.create_task(co.read("k", up.call())) for _ in range(3)]
        await asyncio.sleep(0)
        up.issued[0].set_exception(RuntimeError("down"))
        with pytest.raises(RuntimeError):
            await r0
        await up.wait_issued(2)
        up.issued[1].set_result("ok")
        assert await asyncio.gather(*batch) == ["ok"] * 3

    asyncio.run(main())


def test_pacing_bounds_upstream_calls_per_key_but_never_delays_a_lone_read():
    async def main():
        co = LinearizableReadCoalescer(min_interval=0.05)
        issued = []

        async def call():
            issued.append(time.monotonic())
            await asyncio.sleep(0.001)
            return len(issued)

        t = time.monotonic()
        assert await co.read("k", call) == 1
        assert time.monotonic() - t < 0.04           # nothing in flight: no pacing
        await asyncio.sleep(0.06)
        readers = []
        end = time.monotonic() + 0.3
        while time.monotonic() < end:                # a hot key: a read every millisecond
            readers.append(asyncio.create_task(co.read("k", call)))
            await asyncio.sleep(0.001)
        await asyncio.gather(*readers)
        gaps = [b - a for a, b in zip(issued[1:], issued[2:])]
        assert len(issued) <= 1 + 1 + 0.3 / 0.05 + 1
        assert min(gaps) >= 0.049

    asyncio.run(main())
