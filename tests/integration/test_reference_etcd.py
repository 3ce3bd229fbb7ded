"""The reference etcd 3.4.23 that interop tests and benchmarks compare against starts and serves."""

import subprocess

from tests.support.etcd_ref import ETCDCTL_BIN


def test_reference_three_member_cluster_serves(etcd3):
    env = {"ETCDCTL_API": "3"}
    out = subprocess.run(
        [ETCDCTL_BIN, "--endpoints", etcd3.endpoints, "endpoint", "health"],
        capture_output=True, text=True, timeout=30, env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("is healthy") == 3
