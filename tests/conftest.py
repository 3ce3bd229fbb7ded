"""Fixtures shared by every test tier: managed processes and reference etcd clusters."""

from __future__ import annotations

import pytest

from tests.support.etcd_ref import ClusterSpec, start_etcd_cluster
from cluster.launch import ProcessGroup


@pytest.fixture
def procs(tmp_path):
    """A ProcessGroup whose processes are killed when the test ends; logs under tmp_path/logs."""
    group = ProcessGroup(str(tmp_path / "logs"))
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
def etcd1(procs, tmp_path) -> ClusterSpec:
    """A running one-member etcd 3.4.23."""
    return start_etcd_cluster(procs, ClusterSpec.allocate(str(tmp_path), 1))


@pytest.fixture
def etcd3(procs, tmp_path) -> ClusterSpec:
    """A running three-member etcd 3.4.23 cluster."""
    return start_etcd_cluster(procs, ClusterSpec.allocate(str(tmp_path), 3))
