"""A running 3-member kvcluster (etcd's default timing, info logs) and a `ClusterView` of it."""

from __future__ import annotations

import pytest

from cluster.launch import ClusterSpec
from tests.support.kvstack import start_kv_cluster

from .cluster_client import ClusterView


@pytest.fixture
def kv3(procs, tmp_path) -> ClusterView:
    spec = start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path), 3, extra_flags=["--log-level", "info"]))
    view = ClusterView(procs, spec)
    try:
        yield view
    finally:
        view.close()
