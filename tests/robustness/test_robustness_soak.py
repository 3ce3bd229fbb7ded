"""Soak: ROBUSTNESS_ROUNDS (default 100) rounds cycling every fault case on one cluster, against
our cluster or etcd 3.4.23 (`make soak`, `make soak-etcd`; opt-in: pytest -m soak).

The cluster runs with its peer links through the fault relay, --snapshot-count SNAPSHOT_COUNT (so
snapshots and the catch-up case happen), and, for ours, the raftWalFsync failpoint armed on every
member (switched on per fault). The cycle: process kills, pauses, peer-link faults, slow fsync
(ours only: etcd's build has no failpoints), member replace (both: REPLACE_KINDS in
test_robustness_members.py), and, every CATCH_UP_EVERY rounds, the catch-up-by-snapshot
case (it is slow: thousands of writes). report.txt in the test's tmp dir grows round by round.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.robustness.faults import (CATCH_UP_CASES, FAULT_CASES, LINK_CASES, PAUSE_CASES, REPLACE_CASES,
                                     SLOW_FSYNC_CASES, SLOW_FSYNC_MS, SNAPSHOT_COUNT)
from tests.robustness.relayed import start_relayed_stack
from tests.robustness.test_robustness_etcd import run_rounds
from tests.robustness.test_robustness_members import REPLACE_KINDS

CATCH_UP_EVERY = 25


def soak_cases(kind: str, rounds: int) -> list:
    cycle = FAULT_CASES + PAUSE_CASES + LINK_CASES
    if kind == "kv":
        cycle += SLOW_FSYNC_CASES
    if kind in REPLACE_KINDS:
        cycle += REPLACE_CASES
    return [CATCH_UP_CASES[0] if i % CATCH_UP_EVERY == CATCH_UP_EVERY - 1 else cycle[i % len(cycle)]
            for i in range(rounds)]


@pytest.mark.soak
@pytest.mark.parametrize("kind", ["kv", "etcd"])
def test_soak(kind, procs, tmp_path):
    rounds = int(os.environ.get("ROBUSTNESS_ROUNDS", "100"))
    seed = int(os.environ.get("ROBUSTNESS_SEED", random.randrange(1 << 20)))
    member_env = {}
    if kind == "kv":
        member_env = {f"m{i}": {"KVCLUSTER_FAILPOINTS": f"raftWalFsync=sleep({SLOW_FSYNC_MS})",
                                "KVCLUSTER_FAILPOINTS_WHILE": str(tmp_path / f"m{i}.fsync-slow")}
                      for i in (1, 2, 3)}
    stack = start_relayed_stack(procs, str(tmp_path), kind, seed, ["--snapshot-count", str(SNAPSHOT_COUNT)],
                                member_env=member_env)
    try:
        name = "kvcluster" if kind == "kv" else "etcd 3.4.23"
        reports, text = run_rounds(stack, tmp_path, f"{name} soak, seed {seed}", soak_cases(kind, rounds), seed)
        assert sum(r.n_violations for r in reports) == 0, f"{text}\nkept in {tmp_path}"
    finally:
        procs.close()
        stack.relay.close()
