"""Our cluster under every fault case: 0 violations required (same tester as the etcd calibration)."""

from __future__ import annotations

import os
import random

import pytest

from cluster.launch import ClusterSpec
from tests.robustness.faults import FAULT_CASES, PAUSE_CASES, PROXY_CASES, Stack
from tests.robustness.test_robustness_etcd import run_rounds, stale_read_mutation_is_flagged
from tests.support.kvstack import start_kv_cluster, start_kvproxy


@pytest.fixture
def kv3(procs, tmp_path) -> ClusterSpec:
    return start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path), 3))


def test_every_fault_case_against_kvcluster(procs, kv3, tmp_path):
    seed = int(os.environ.get("ROBUSTNESS_SEED", random.randrange(1 << 20)))
    stack = Stack(procs, kv3, "kv")
    reports, text = run_rounds(stack, tmp_path, f"kvcluster, seed {seed}", FAULT_CASES + PAUSE_CASES, seed)
    assert all(r.ops_checked > 100 for r in reports), text
    assert sum(r.n_violations for r in reports) == 0, f"{text}\nkept in {tmp_path}"
    assert stale_read_mutation_is_flagged(str(tmp_path / "rounds" / "round-0-history.jsonl"))


def test_fault_cases_through_kvproxy(procs, kv3, tmp_path):
    """The same traffic through our proxy (every client and watcher on the proxy's one endpoint):
    proxy SIGKILL/SIGTERM with restart, and a leader SIGKILL behind it."""
    seed = int(os.environ.get("ROBUSTNESS_SEED", random.randrange(1 << 20)))
    proxy = start_kvproxy(procs, kv3, name="kvproxy")
    stack = Stack(procs, kv3, "kv", proxy=proxy)
    reports, text = run_rounds(stack, tmp_path, f"kvproxy -> kvcluster, seed {seed}", PROXY_CASES, seed)
    assert all(r.ops_checked > 100 for r in reports), text
    assert sum(r.n_violations for r in reports) == 0, f"{text}\nkept in {tmp_path}"
