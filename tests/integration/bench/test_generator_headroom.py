"""Opt-in (pytest -m bench, on a quiet machine): kvbench drives a 3-member etcd 3.4.23 at
>= 15,000 puts/s with 100 connections × 10 streams, and its h2load processes are not the limit.

On a machine shared with other loads etcd gets less CPU and the first assertion fails; the
second (generator headroom) still holds, and the printed figures say which side was short.
"""

import pytest

from bench.suites import LoadOptions, run_unary


@pytest.mark.bench
def test_kvbench_drives_etcd_at_15000_puts_per_second(etcd3, tmp_path):
    r = run_unary(LoadOptions(etcd3.endpoints.split(","), conns=100, clients=1000, total=100_000, val_size=256,
                              key_size=3, workdir=str(tmp_path)), "put")
    busy = r.extra["h2load_core_busy"]
    print(f"{r.throughput:,.0f} puts/s, errors {r.errors}, h2load busy {busy:.1%} of a core per process")
    assert r.errors == 0
    assert busy < 0.5, "the load generator itself is the bottleneck"
    assert r.throughput >= 15_000
