"""`etcdctl check perf` (60 s of puts from 50 clients at 150/s, then the prefix deleted) against a
3-member kvcluster and a 3-member etcd 3.4.23 at the same time: it passes on both, and leaves
no key behind. (`check datascale` reads /metrics from the client URL, which kvcluster cannot
serve there; docs/interop.md.)"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

from cluster.launch import ClusterSpec, ProcessGroup, wait_until
from tests.support.etcd_ref import ETCDCTL_BIN, start_etcd_cluster
from tests.support.kvstack import start_kv_cluster

from .etcdctl import Etcdctl, etcdctl_env


def check_perf(endpoints: str) -> subprocess.CompletedProcess:
    return subprocess.run([ETCDCTL_BIN, "--endpoints", endpoints, "check", "perf", "--load", "s"],
                          capture_output=True, text=True, timeout=180, env=etcdctl_env())


def test_check_perf_passes_as_against_etcd(tmp_path):
    groups, specs = [], {}
    try:
        for name, start in (("etcd", start_etcd_cluster), ("kv", start_kv_cluster)):
            procs = ProcessGroup(str(tmp_path / name / "logs"))
            groups.append(procs)
            spec = ClusterSpec.allocate(str(tmp_path / name), 3)
            start(procs, spec, timeout=60)
            ctl = Etcdctl(spec.endpoints)
            wait_until(lambda ctl=ctl: ctl.run(["endpoint", "health", "--cluster"]).rc == 0, 60,
                       f"{name}: 3 healthy members")
            specs[name] = spec
        with ThreadPoolExecutor(2) as pool:
            runs = dict(zip(specs, pool.map(check_perf, (s.endpoints for s in specs.values()))))
        for name, run in runs.items():
            verdicts = re.findall(r"^(PASS|FAIL)(: .*)?$", run.stdout, re.M)
            assert run.returncode == 0 and verdicts and all(v[0] == "PASS" for v in verdicts), \
                f"{name}: exit {run.returncode}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
            assert "PASS: Throughput is " in run.stdout, name  # at least 90% of the 150/s asked
            left = Etcdctl(specs[name].endpoints).run(["get", "", "--prefix", "--count-only", "-w", "json"])
            assert '"count"' not in left.stdout, f"{name}: keys left behind: {left.stdout}"
    finally:
        for procs in groups:
            procs.close()
