"""Faults on what members hold: a follower down until it needs a snapshot (etcd 3.4.23 and ours),
a slow WAL fsync (ours only: etcd 3.4's Debian build has no gofail failpoints), and member
replacement (MemberRemove + MemberAdd of a fresh member, on both)."""

from __future__ import annotations

import os
import random
import urllib.request

import pytest

from cluster.launch import ClusterSpec
from tests.robustness.faults import (CATCH_UP_CASES, REPLACE_CASES, SLOW_FSYNC_CASES, SLOW_FSYNC_MS,
                                     SNAPSHOT_COUNT, Stack)
from tests.robustness.test_robustness_etcd import run_rounds

REPLACE_KINDS = ["etcd", "kv"]


def _seed() -> int:
    return int(os.environ.get("ROBUSTNESS_SEED", random.randrange(1 << 20)))


def _check(reports, text, tmp_path):
    assert all(r.ops_checked > 50 for r in reports), text
    assert sum(r.n_violations for r in reports) == 0, f"{text}\nkept in {tmp_path}"


@pytest.mark.parametrize("kind", ["etcd", "kv"])
def test_follower_down_until_a_snapshot_is_needed(kind, procs, tmp_path):
    seed = _seed()
    spec = ClusterSpec.allocate(str(tmp_path), 3, ["--snapshot-count", str(SNAPSHOT_COUNT)])
    stack = Stack(procs, spec, kind).start_all()
    reports, text = run_rounds(stack, tmp_path, f"{kind}, --snapshot-count {SNAPSHOT_COUNT}, seed {seed}",
                               CATCH_UP_CASES, seed)
    _check(reports, text, tmp_path)
    # It did catch up by a snapshot (and HashKV agreed at the round's end: _check).
    victim = next(m for m in spec.members if m.name == reports[0].victims[0])
    assert metric_sum(victim.metrics_url, "etcd_network_snapshot_receive_success") >= 1, text


def test_slow_fsync_on_kvcluster(procs, tmp_path):
    seed = _seed()
    spec = ClusterSpec.allocate(str(tmp_path), 3)
    env = {m.name: {"KVCLUSTER_FAILPOINTS": f"raftWalFsync=sleep({SLOW_FSYNC_MS})",
                    "KVCLUSTER_FAILPOINTS_WHILE": str(tmp_path / f"{m.name}.fsync-slow")} for m in spec.members}
    stack = Stack(procs, spec, "kv", member_env=env).start_all()
    reports, text = run_rounds(stack, tmp_path, f"kvcluster, raftWalFsync=sleep({SLOW_FSYNC_MS}), seed {seed}",
                               SLOW_FSYNC_CASES, seed)
    _check(reports, text, tmp_path)
    # The failpoint did fire on each victim: its WAL fsync histogram has fsyncs slower than 0.256 s.
    for r in reports:
        m = next(m for m in spec.members if m.name == r.victims[0])
        assert slow_fsyncs(m.metrics_url) > 0, f"no fsync > 0.256 s on {m.name}\n{text}"


def metric_sum(metrics_url: str, name: str) -> float:
    """The sum of every sample of counter `name` (all label sets; prometheus_client may add _total)."""
    text = urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ", name + "_total{", name + "_total ")))


def slow_fsyncs(metrics_url: str) -> float:
    """How many WAL fsyncs took longer than 0.256 s (etcd_disk_wal_fsync_duration_seconds)."""
    text = urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("etcd_disk_wal_fsync_duration_seconds_count") or \
                line.startswith('etcd_disk_wal_fsync_duration_seconds_bucket{le="0.256"}'):
            values[line.split("{")[0].split(" ")[0]] = float(line.rsplit(" ", 1)[1])
    return values["etcd_disk_wal_fsync_duration_seconds_count"] - values["etcd_disk_wal_fsync_duration_seconds_bucket"]


@pytest.mark.parametrize("kind", REPLACE_KINDS)
def test_member_replace(kind, procs, tmp_path):
    seed = _seed()
    flags = ["--log-level", "info"] if kind == "kv" else []  # leader changes and membership in the logs
    stack = Stack(procs, ClusterSpec.allocate(str(tmp_path), 3, flags), kind).start_all()
    reports, text = run_rounds(stack, tmp_path, f"{kind} member replace, seed {seed}", REPLACE_CASES, seed)
    _check(reports, text, tmp_path)
    assert [m.name for m in stack.spec.members] != ["m1", "m2", "m3"]
