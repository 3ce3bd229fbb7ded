"""Opt-in (pytest -m bench, on a quiet machine): kvbench drives etcd 3.4.23 at >= 15,000 puts/s
(100 connections × 10 streams, 256 B values), and its h2load processes are not the limit.

The target that shows the generator's headroom is a one-member etcd 3.4.23: it commits without
replication, so it answers faster than three members on the same two cores, and what is measured
is kvbench's ability to offer and count the load. The same load on a three-member etcd (one
h2load process per endpoint) is measured beside it and printed, not asserted: there three etcd
processes and the generator share two cores, and the figure is etcd's (BASELINES.md's 14,600 to
19,300 puts/s were taken on a quiet machine of the same kind; here we have seen 9,000 to 12,300).

On a machine shared with other loads etcd gets less CPU and the throughput assertion fails; the
generator-headroom assertion still holds, and the printed figures and load averages say which
side was short.
"""

import os
import time

import pytest

from bench.suites import LoadOptions, run_unary
from cluster.launch import ClusterSpec
from tests.support.etcd_ref import start_etcd_cluster

LOAD = dict(conns=100, clients=1000, total=100_000, val_size=256, key_size=3)
REST_S = 3.0


def _load_average() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def _puts(cluster: ClusterSpec, workdir: str):
    time.sleep(REST_S)  # the cluster settles after start-up (elections, first commits)
    before = _load_average()
    result = run_unary(LoadOptions(cluster.endpoints.split(","), workdir=workdir, **LOAD), "put")
    return result, before, _load_average()


@pytest.mark.bench
def test_kvbench_drives_etcd_at_15000_puts_per_second(procs, tmp_path):
    one = start_etcd_cluster(procs, ClusterSpec.allocate(str(tmp_path / "one"), 1))
    r1, load1_before, load1_after = _puts(one, str(tmp_path / "work1"))
    three = start_etcd_cluster(procs, ClusterSpec.allocate(str(tmp_path / "three"), 3))
    r3, load3_before, load3_after = _puts(three, str(tmp_path / "work3"))

    for members, r, before, after in ((1, r1, load1_before, load1_after), (3, r3, load3_before, load3_after)):
        print(f"etcd 3.4.23, {members} member(s): {r.throughput:,.0f} puts/s (h2load's own figure "
              f"{r.extra['h2load_req_per_s']:,.0f}), errors {r.errors}, {r.extra['h2load_processes']} h2load "
              f"process(es) each busy {r.extra['h2load_core_busy']:.1%} of a core; load average {before} -> "
              f"{after} on {os.cpu_count()} cores")
    for r in (r1, r3):
        assert r.errors == 0
        assert r.extra["h2load_core_busy"] < 0.5, "the load generator itself is the bottleneck"
    assert r1.throughput >= 15_000
