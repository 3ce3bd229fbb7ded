"""Calibration: the tester against real etcd 3.4.23 finds 0 violations in every fault case."""

from __future__ import annotations

import os
import random

from tests.robustness.faults import FAULT_CASES, PAUSE_CASES, Stack
from tests.robustness.history import GET, PUT, History
from tests.robustness.linearizability import check_history
from tests.robustness.report import table
from tests.robustness.rounds import run_round


def run_rounds(stack: Stack, tmp_path, title: str, cases, seed: int, **round_args):
    """One round per case; report.txt is rewritten after every round (a cut-short soak keeps its table)."""
    reports = []
    for i, case in enumerate(cases):
        reports.append(run_round(stack, i, case, seed + i, str(tmp_path / "rounds"), **round_args))
        (tmp_path / "report.txt").write_text(table(reports, title) + "\n")
    text = table(reports, title)
    print("\n" + text)
    return reports, text


def stale_read_mutation_is_flagged(history_path: str) -> bool:
    """Make one recorded read stale (return the value an acknowledged put replaced, for a read
    invoked after that put returned): the checker must flag the recorded history then."""
    ops = History.load(history_path).ops
    puts = sorted((o for o in ops if o.kind == PUT and not o.maybe and o.output["prev"]), key=lambda o: o.ret)
    for p in puts:
        later = [o for o in ops if o.kind == GET and o.key == p.key and o.call > p.ret]
        if later:
            r = min(later, key=lambda o: o.call)
            r.output = {"kv": p.output["prev"], "rev": r.output["rev"]}
            return not check_history(ops).ok
    raise AssertionError("no put followed by a read in the recorded history")


def test_every_fault_case_against_etcd(procs, etcd3, tmp_path):
    seed = int(os.environ.get("ROBUSTNESS_SEED", random.randrange(1 << 20)))
    stack = Stack(procs, etcd3, "etcd")
    reports, text = run_rounds(stack, tmp_path, f"etcd 3.4.23, seed {seed}", FAULT_CASES + PAUSE_CASES, seed)
    assert all(r.ops_checked > 100 for r in reports), text
    assert sum(r.n_violations for r in reports) == 0, f"{text}\nkept in {tmp_path}"
    # The checker is not vacuous on real traffic: one stale read planted in a recorded history.
    assert stale_read_mutation_is_flagged(str(tmp_path / "rounds" / "round-0-history.jsonl"))
