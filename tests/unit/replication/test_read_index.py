"""ReadIndexBatcher: one round per batch of waiting readers, retries, failures."""

from __future__ import annotations

import asyncio

import pytest

from cluster.raft import RequestDropped
from cluster.replication.errors import LEADER_CHANGED, NO_LEADER
from cluster.replication.read_index import MIN_GATHER_WINDOW, PEAK_ROUNDS, ReadIndexBatcher
from cluster.server import errors as server_errors


class ScriptedCore:
    """Records read requests and wake-ups; the test answers them and plays the driver loop
    (`batcher.issue_pending()`)."""

    def __init__(self):
        self.ctxs: list[bytes] = []
        self.drop = False
        self.wakes = 0
        self.faults = {"slow": 0, "failed": 0}

    def wake(self) -> None:
        self.wakes += 1

    def request(self, ctx: bytes) -> None:
        if self.drop:
            raise RequestDropped("no leader")
        self.ctxs.append(ctx)


def make(core, **kw):
    counts = {"rounds": 0, "reads": 0}

    def count(what, n=1):  # rounds and reads in `counts`; slow and failed rounds in core.faults
        (counts if what in counts else core.faults)[what] += n

    kw.setdefault("retry_after", 10.0)
    kw.setdefault("timeout", 10.0)
    return ReadIndexBatcher(7, core.request, core.wake, count_round=lambda: count("rounds"),
                            count_reads=lambda n: count("reads", n), count_slow=lambda: count("slow"),
                            count_failed=lambda: count("failed"), **kw), counts


def test_readers_arriving_before_the_loop_runs_share_one_round():
    async def main():
        core = ScriptedCore()
        batcher, counts = make(core)
        readers = [asyncio.create_task(batcher.wait_read_index()) for _ in range(5)]
        await asyncio.sleep(0)
        assert core.ctxs == [] and core.wakes == 1  # nothing issued until the loop runs
        batcher.issue_pending()
        batcher.issue_pending()  # nothing new pending: no second round
        assert len(core.ctxs) == 1
        batcher.on_read_state(core.ctxs[0], 5)
        assert await asyncio.gather(*readers) == [5] * 5
        assert counts == {"rounds": 1, "reads": 5}

    asyncio.run(main())


def test_readers_arriving_during_a_round_share_the_next_one():
    async def main():
        core = ScriptedCore()
        batcher, counts = make(core)
        first = asyncio.create_task(batcher.wait_read_index())
        await asyncio.sleep(0)
        batcher.issue_pending()
        assert len(core.ctxs) == 1
        later = [asyncio.create_task(batcher.wait_read_index()) for _ in range(10)]
        await asyncio.sleep(0)
        batcher.issue_pending()
        assert len(core.ctxs) == 1  # they wait for the in-flight round to finish
        wakes = core.wakes
        batcher.on_read_state(core.ctxs[0], 5)
        assert core.wakes == wakes + 1  # the loop is woken to issue the pending round
        assert await first == 5
        more = asyncio.create_task(batcher.wait_read_index())  # before the loop runs: joins too
        await asyncio.sleep(0)
        batcher.issue_pending()
        assert len(core.ctxs) == 2  # one round for all eleven
        batcher.on_read_state(core.ctxs[1], 9)
        assert await asyncio.gather(*later, more) == [9] * 11
        assert counts == {"rounds": 2, "reads": 12}
        assert len(set(core.ctxs)) == 2

    asyncio.run(main())


def test_unanswered_round_is_retried_with_a_new_ctx_then_times_out():
    async def main():
        core = ScriptedCore()
        batcher, _ = make(core, retry_after=0.01, timeout=0.5)
        reader = asyncio.create_task(batcher.wait_read_index())
        await asyncio.sleep(0)
        batcher.issue_pending()
        while len(core.ctxs) < 3 and not reader.done():  # retried every 10 ms
            await asyncio.sleep(0.005)
        assert len(set(core.ctxs)) == len(core.ctxs)
        batcher.on_read_state(core.ctxs[0], 4)  # a late answer to the first ctx still counts
        assert await reader == 4
        reader = asyncio.create_task(batcher.wait_read_index())
        await asyncio.sleep(0)
        batcher.issue_pending()
        with pytest.raises(type(server_errors.TIMEOUT)) as exc:
            await reader
        assert exc.value is server_errors.TIMEOUT
        # every reissue and the timeout counted as slow (etcd_server_slow_read_indexes_total)
        assert core.faults == {"slow": len(core.ctxs) - 2 + 1, "failed": 0}

    asyncio.run(main())


def test_no_leader_and_leader_change_fail_the_readers():
    async def main():
        core = ScriptedCore()
        batcher, _ = make(core)
        core.drop = True
        reader = asyncio.create_task(batcher.wait_read_index())
        await asyncio.sleep(0)
        batcher.issue_pending()
        with pytest.raises(type(NO_LEADER)) as exc:
            await reader
        assert exc.value is NO_LEADER
        assert core.faults == {"slow": 0, "failed": 1}  # etcd_server_read_indexes_failed_total
        core.drop = False
        readers = [asyncio.create_task(batcher.wait_read_index()) for _ in range(3)]
        await asyncio.sleep(0)
        batcher.issue_pending()
        later = asyncio.create_task(batcher.wait_read_index())  # pending behind the in-flight one
        await asyncio.sleep(0)
        batcher.fail_all(LEADER_CHANGED)
        results = await asyncio.gather(*readers, later, return_exceptions=True)
        assert results == [LEADER_CHANGED] * 4
        batcher.issue_pending()
        assert len(core.ctxs) == 1  # failing the rounds left nothing to issue

    asyncio.run(main())


def test_a_cancelled_reader_does_not_cancel_its_round():
    async def main():
        core = ScriptedCore()
        batcher, _ = make(core)
        first = asyncio.create_task(batcher.wait_read_index())
        await asyncio.sleep(0)
        batcher.issue_pending()
        a = asyncio.create_task(batcher.wait_read_index())  # a and b: the same pending round
        b = asyncio.create_task(batcher.wait_read_index())
        await asyncio.sleep(0)
        a.cancel()
        batcher.on_read_state(core.ctxs[0], 3)
        assert await first == 3
        batcher.issue_pending()
        batcher.on_read_state(core.ctxs[1], 4)
        assert await b == 4
        assert a.cancelled()

    asyncio.run(main())


async def join(batcher, readers: int) -> list[asyncio.Task]:
    """`readers` readers wait for a read index (they have joined the pending round on return)."""
    tasks = [asyncio.create_task(batcher.wait_read_index()) for _ in range(readers)]
    await asyncio.sleep(0)
    return tasks


async def one_round(batcher, core, *, readers: int, index: int, takes: float = 0.0) -> list[int]:
    """`readers` readers join, the loop issues their round, the core answers `index` after
    `takes` seconds; returns what the readers got."""
    tasks = await join(batcher, readers)
    batcher.issue_pending()
    if takes:
        await asyncio.sleep(takes)
    batcher.on_read_state(core.ctxs[-1], index)
    return await asyncio.gather(*tasks)


async def woken(core, wakes: int) -> None:
    while core.wakes == wakes:
        await asyncio.sleep(0.001)


def saturate(batcher) -> None:
    """Rounds have been taking long (a busy cluster): the gather window grows to its maximum."""
    batcher._round_seconds = 10.0


def test_the_gather_window_follows_the_round_duration():
    async def main():
        core = ScriptedCore()
        batcher, _ = make(core, max_gather_window=0.05)
        assert batcher.gather_window() == MIN_GATHER_WINDOW  # nothing measured yet
        for i in range(20):  # rounds answered at once: the window stays at its minimum
            await one_round(batcher, core, readers=1, index=i)
        assert batcher.gather_window() == MIN_GATHER_WINDOW
        for i in range(20):  # rounds taking at least 10 ms: the window grows past 15 ms
            await one_round(batcher, core, readers=1, index=i, takes=0.01)
        assert 0.015 < batcher.gather_window() <= 0.05

    asyncio.run(main())


def test_a_round_gathers_most_of_the_previous_rounds_readers_before_it_is_issued():
    async def main():
        core = ScriptedCore()
        batcher, counts = make(core, max_gather_window=10.0)
        saturate(batcher)
        assert await one_round(batcher, core, readers=10, index=5) == [5] * 10
        # They come back one by one: the round waits for 9 of the 10 (REFILL_SHARE of the
        # most readers waiting at once).
        again = await join(batcher, 8)
        wakes = core.wakes
        batcher.issue_pending()
        assert len(core.ctxs) == 1
        again += await join(batcher, 1)
        assert core.wakes == wakes + 1  # the ninth wakes the loop
        batcher.issue_pending()
        assert len(core.ctxs) == 2
        batcher.on_read_state(core.ctxs[1], 6)
        assert await asyncio.gather(*again) == [6] * 9
        assert counts == {"rounds": 2, "reads": 19}

    asyncio.run(main())


def test_a_gathering_round_goes_out_when_its_window_ends():
    async def main():
        core = ScriptedCore()
        batcher, counts = make(core, max_gather_window=0.02)
        saturate(batcher)
        await one_round(batcher, core, readers=10, index=5)
        (late,) = await join(batcher, 1)
        batcher.issue_pending()
        wakes = core.wakes
        assert len(core.ctxs) == 1
        await asyncio.wait_for(woken(core, wakes), 1.0)  # the window's timer wakes the loop
        batcher.issue_pending()
        assert len(core.ctxs) == 2
        batcher.on_read_state(core.ctxs[1], 7)
        assert await late == 7
        # One reader at a time from now on: once the last PEAK_ROUNDS rounds saw no more than
        # one waiting, a lone reader's round is issued at once.
        for i in range(PEAK_ROUNDS):
            (one,) = await join(batcher, 1)
            wakes = core.wakes
            batcher.issue_pending()
            await asyncio.wait_for(woken(core, wakes), 1.0)
            batcher.issue_pending()
            batcher.on_read_state(core.ctxs[-1], 8 + i)
            assert await one == 8 + i
        (lone,) = await join(batcher, 1)
        rounds = len(core.ctxs)
        batcher.issue_pending()
        assert len(core.ctxs) == rounds + 1
        batcher.on_read_state(core.ctxs[-1], 20)
        assert await lone == 20

    asyncio.run(main())


def test_two_cohorts_of_readers_merge_into_one_round():
    async def main():
        core = ScriptedCore()
        batcher, counts = make(core, max_gather_window=10.0)
        saturate(batcher)
        a = await join(batcher, 5)
        batcher.issue_pending()  # cohort A in flight
        b = await join(batcher, 5)  # cohort B waits meanwhile: 10 readers at once
        batcher.on_read_state(core.ctxs[0], 1)
        assert await asyncio.gather(*a) == [1] * 5
        batcher.issue_pending()  # B goes out
        assert len(core.ctxs) == 2
        a = await join(batcher, 5)  # A is back
        batcher.on_read_state(core.ctxs[1], 2)
        assert await asyncio.gather(*b) == [2] * 5
        batcher.issue_pending()
        assert len(core.ctxs) == 2  # A alone is not 9 of the 10 concurrent readers: it waits
        wakes = core.wakes
        b = await join(batcher, 4)
        assert core.wakes == wakes + 1  # the ninth reader wakes the loop
        batcher.issue_pending()
        assert len(core.ctxs) == 3
        batcher.on_read_state(core.ctxs[2], 3)
        assert await asyncio.gather(*a, *b) == [3] * 9
        assert counts == {"rounds": 3, "reads": 19}

    asyncio.run(main())
