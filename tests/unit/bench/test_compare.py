"""kvbench compare's bookkeeping, without servers: alternation, pooling of rounds, missing cells."""

import pytest

from bench.compare import Suite, Target, build_suites, pool_results, run_suites
from bench.histogram import LatencyHistogram
from bench.result import BenchResult


def result(ok, duration, *lat, notes=()):
    h = LatencyHistogram()
    for v in lat:
        h.record(v)
    return BenchResult("s", "t", ok, 0, duration, h, notes=list(notes))


def fake_suite(calls, tier="cluster", ceiling=False, fail_on=None):
    def run(opts):
        name = opts.endpoints[0]
        calls.append(name)
        if name == fail_on:
            raise RuntimeError("boom\nmore lines")
        return result(100, 1.0, 1000)
    return Suite("fake", tier, "load", run, {}, ceiling=ceiling)


TARGETS = dict(etcd=Target("etcd", cluster=["etcd"], proxy=["etcd-proxy"]),
               ours=Target("ours", cluster=["ours"], proxy=["ours-proxy"]),
               ceiling=Target("ceiling", cluster=["null"], proxy=["null"]))


def run(suites, rounds=1, **targets):
    t = {**TARGETS, **targets}
    return run_suites(suites, t["etcd"], t["ours"], t["ceiling"], rounds, "/tmp", lambda _: None)


def test_rounds_alternate_which_stack_goes_first():
    calls = []
    run([fake_suite(calls, ceiling=True)], rounds=4)
    assert calls == ["etcd", "ours", "null", "ours", "etcd", "null", "etcd", "ours", "null", "ours", "etcd", "null"]


def test_proxy_suites_go_to_the_proxies():
    calls = []
    run([fake_suite(calls, tier="proxy")])
    assert calls == ["etcd-proxy", "ours-proxy"]


def test_missing_stack_and_missing_proxy_give_reasons_not_figures():
    calls = []
    rows = run([fake_suite(calls), fake_suite(calls, tier="proxy")],
               ours=Target("ours", cluster=["ours"], proxy_missing="kvproxy did not start: x"))
    assert calls == ["etcd", "ours", "etcd-proxy"]
    assert rows[0].ours.result is not None
    assert rows[1].ours.missing == "kvproxy did not start: x"
    rows = run([fake_suite([])], ours=Target("ours", missing="`cluster.cli --help` exited with 1"))
    assert rows[0].ours.missing.startswith("`cluster.cli")


def test_a_failing_run_becomes_a_reason_and_the_others_go_on():
    calls = []
    rows = run([fake_suite(calls, fail_on="ours"), fake_suite(calls)], rounds=2)
    assert rows[0].ours.missing == "failed: RuntimeError: boom"
    assert rows[0].etcd.result.ok == 200
    assert rows[1].ours.result is not None


def test_pooling_sums_ops_and_time_and_merges_histograms():
    a, b = result(300, 1.0, 10, 20, notes=["n1"]), result(100, 1.0, 30, notes=["n1", "n2"])
    pooled = pool_results([a, b])
    assert (pooled.ok, pooled.duration_s, pooled.throughput) == (400, 2.0, 200.0)
    assert pooled.latency.count == 3 and pooled.latency.max_us == 30
    assert pooled.notes == ["n1", "n2"]
    assert a.latency.count == 2  # inputs untouched


@pytest.mark.parametrize("quick", [True, False])
def test_suite_names_are_usable_with_dash_dash_suites(quick):
    suites = build_suites(quick)
    assert all(" " not in s.name and "," not in s.name for s in suites)
    assert {s.tier for s in suites} == {"cluster", "proxy"}
    assert [s.name for s in suites] == [s.name for s in build_suites(not quick)]
