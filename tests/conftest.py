"""Fixtures shared by every test tier: managed processes and reference etcd clusters."""

from __future__ import annotations

import pytest

from tests.support.etcd_ref import ClusterSpec, knows_leader, start_etcd_cluster
from cluster.launch import ProcessGroup, wait_until


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
    """A running three-member etcd 3.4.23 cluster, every member knowing the leader (a timed load
    would otherwise count the first election as the latency of its first writes)."""
    spec = start_etcd_cluster(procs, ClusterSpec.allocate(str(tmp_path), 3))
    for m in spec.members:
        wait_until(lambda m=m: knows_leader(m.endpoint), 30, f"etcd {m.name} knows the leader")
    return spec
