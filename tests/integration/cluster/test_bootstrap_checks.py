"""Members refuse flags that cannot form the configured cluster, and other clusters' data dirs."""

from __future__ import annotations

import signal

from cluster.launch import ClusterSpec
from tests.support.kvstack import KVCLUSTER, start_kv_cluster
from cluster.launch import wait_until


def run_until_exit(procs, name: str, argv: list[str], timeout: float = 20.0) -> tuple[int, str]:
    proc = procs.start(name, argv)
    wait_until(lambda: proc.poll() is not None, timeout, f"{name} to refuse to start")
    return proc.returncode, procs.log_tail(name, 60)


def test_member_missing_from_initial_cluster_is_refused(procs, tmp_path):
    spec = ClusterSpec.allocate(str(tmp_path), 2)
    m1, m2 = spec.members
    argv = spec.argv(m1)
    argv[argv.index("--initial-cluster") + 1] = f"m2={m2.peer_url}"
    code, log = run_until_exit(procs, "kv-m1", [*KVCLUSTER, *argv])
    assert code != 0
    assert "couldn't find local name 'm1' in the initial cluster configuration" in log


def test_data_dir_of_another_cluster_is_refused(procs, tmp_path):
    spec = start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path), 1))
    procs.kill("kv-m1", signal.SIGTERM)  # a clean stop; the data dir now belongs to cluster A
    spec.token = "another-cluster"
    code, log = run_until_exit(procs, "kv-m1-again", [*KVCLUSTER, *spec.argv(spec.members[0])])
    assert code != 0
    assert "it is another cluster's data dir" in log
