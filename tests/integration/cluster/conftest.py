"""Running 3-member kvclusters (etcd's default timing, info logs) and `ClusterView`s of them:
`kv3`, and `small_snapshots` (compaction every SNAPSHOT_COUNT entries, SEGMENT_BYTES WAL
segments, 100 entries kept behind: a follower down for a few thousand writes needs a snapshot)."""

from __future__ import annotations

import pytest

from .cluster_client import ClusterView, running_view

SNAPSHOT_COUNT = 200
SEGMENT_BYTES = 64 * 1024


@pytest.fixture
def kv3(procs, tmp_path) -> ClusterView:
    yield from running_view(procs, tmp_path)


@pytest.fixture
def small_snapshots(procs, tmp_path, monkeypatch) -> ClusterView:
    monkeypatch.setenv("KVCLUSTER_WAL_SEGMENT_BYTES", str(SEGMENT_BYTES))
    yield from running_view(procs, tmp_path, "--snapshot-count", str(SNAPSHOT_COUNT),
                            "--experimental-snapshot-catchup-entries", "100")
