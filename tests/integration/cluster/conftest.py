"""Running 3-member kvclusters (etcd's default timing, info logs) and `ClusterView`s of them:
`kv3`, and `small_snapshots` (compaction every SNAPSHOT_COUNT entries, SEGMENT_BYTES WAL
segments, 100 entries kept behind: a follower down for a few thousand writes needs a snapshot)."""

from __future__ import annotations

import pytest

from cluster.launch import ClusterSpec
from tests.support.kvstack import start_kv_cluster

from .cluster_client import ClusterView

SNAPSHOT_COUNT = 200
SEGMENT_BYTES = 64 * 1024


@pytest.fixture
def kv3(procs, tmp_path) -> ClusterView:
    spec = start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path), 3, extra_flags=["--log-level", "info"]))
    view = ClusterView(procs, spec)
    try:
        yield view
    finally:
        view.close()


@pytest.fixture
def small_snapshots(procs, tmp_path, monkeypatch) -> ClusterView:
    monkeypatch.setenv("KVCLUSTER_WAL_SEGMENT_BYTES", str(SEGMENT_BYTES))
    spec = ClusterSpec.allocate(str(tmp_path), 3, extra_flags=[
        "--log-level", "info", "--snapshot-count", str(SNAPSHOT_COUNT),
        "--experimental-snapshot-catchup-entries", "100"])
    view = ClusterView(procs, start_kv_cluster(procs, spec))
    try:
        yield view
    finally:
        view.close()
