"""Seeded random fault schedules over a simulated cluster (see schedule.py and harness.py).

Every schedule checks the Raft invariants after every step, then liveness after healing.
``RAFT_SEEDS`` sets how many schedules CI runs (default 2000, in items of 50); ``RAFT_SEED=n``
runs only schedule ``n`` (``RAFT_STEPS`` its length) -- a failure prints the seeds and the exact
command to replay the first one.
The soak (``pytest -m soak``) runs many more, longer schedules.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from .schedule import ScheduleFailure, run_schedule

DEFAULT_STEPS = 500
SOAK_STEPS = 2000
ROOT = Path(__file__).resolve().parents[3]


CHUNK = 50  # schedules per test item (per-item pytest overhead matters at this count)


def _chunks() -> list[list[int]]:
    if "RAFT_SEED" in os.environ:
        return [[int(os.environ["RAFT_SEED"])]]
    seeds = list(range(int(os.environ.get("RAFT_SEEDS", "2000"))))
    return [seeds[i : i + CHUNK] for i in range(0, len(seeds), CHUNK)]


def _run_all_or_fail(seeds: list[int], steps: int) -> None:
    failures = []
    for seed in seeds:
        try:
            run_schedule(seed, steps)
        except ScheduleFailure as failure:
            failures.append(failure)
    if failures:
        first = failures[0]
        pytest.fail(
            f"{len(failures)} failing schedule(s): seeds {[f.seed for f in failures]}\n"
            f"{first}\n"
            f"replay: RAFT_SEED={first.seed} RAFT_STEPS={steps} python -m pytest "
            f"tests/unit/raft/test_simulation.py::test_schedules -q\n"
            f"last steps:\n{first.trace}",
            pytrace=False,
        )


@pytest.mark.parametrize(
    "seeds", _chunks(), ids=lambda seeds: f"seeds{seeds[0]}-{seeds[-1]}"
)
def test_schedules(seeds: list[int]) -> None:
    _run_all_or_fail(seeds, int(os.environ.get("RAFT_STEPS", DEFAULT_STEPS)))


@pytest.mark.soak
@pytest.mark.parametrize("block", range(int(os.environ.get("RAFT_SOAK_BLOCKS", "100"))))
def test_soak(block: int) -> None:
    """100 blocks of 100 long schedules each, seeds from 1,000,000 up."""
    start = 1_000_000 + block * 100
    _run_all_or_fail(list(range(start, start + 100)), SOAK_STEPS)


def test_schedules_exercise_every_feature() -> None:
    """Guard against a harness that silently stops testing: the first schedules must cover
    elections, replication, reads, snapshots, transfers, membership and crashes."""
    stats: Counter = Counter()
    for seed in range(60):
        stats.update(run_schedule(seed).stats)
    for what in (
        "MsgApp", "MsgPreVote", "MsgVote", "MsgHeartbeat", "MsgReadIndex", "MsgReadIndexResp",
        "MsgSnap", "MsgTimeoutNow", "MsgProp", "snapshot installed", "conf change applied",
        "crash", "compact",
    ):
        assert stats[what] > 0, f"no {what} in 60 schedules: {dict(stats)}"


def test_replay_is_exact_across_processes() -> None:
    """The same seed gives the same run, whatever the process's hash randomization."""
    code = (
        "from tests.unit.raft.schedule import run_schedule; "
        "print(run_schedule(11).fingerprint)"
    )
    prints = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
            check=True,
        )
        prints.add(out.stdout.strip())
    prints.add(str(run_schedule(11).fingerprint))
    assert len(prints) == 1, prints
