"""Every kvbench suite against a real 3-member etcd 3.4.23 (small loads: this checks the tool,
not the figures), and the gRPC error accounting of the h2load driver."""

import json
import subprocess
import sys

import grpc
import pytest

from bench import requests as rq
from bench import stack
from bench.h2load import grpc_frame, plan_runs, run_h2load
from bench.roles import endpoints_with_role
from bench.suites import LoadOptions, run_hotkey, run_lease_keepalive, run_mixed, run_unary, run_watch, \
    run_watch_latency
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc


def endpoints(spec):
    return spec.endpoints.split(",")


def count_keys(endpoint, key=b"\0", range_end=b"\0"):
    """Keys in [key, range_end) (default: all)."""
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=key, range_end=range_end, count_only=True),
                                             timeout=10)
    return resp.count


def test_put_and_range_through_h2load(etcd3, tmp_path):
    opts = LoadOptions(endpoints(etcd3), conns=6, clients=24, total=3000, val_size=64, key_space=3,
                       workdir=str(tmp_path))
    put = run_unary(opts, "put")
    assert (put.ok, put.errors) == (3000, 0)
    assert put.latency.count == 3000 and put.throughput > 0
    assert put.extra["h2load_req_per_s"] > 0 and put.extra["sampled_status"].startswith("OK")
    assert count_keys(endpoints(etcd3)[0]) == 3  # three processes, three bodies, three keys
    for serializable in (False, True):
        rng = run_unary(LoadOptions(**{**opts.__dict__, "serializable": serializable, "prefix": True,
                                       "limit": 2, "total": 600}), "range")
        assert (rng.ok, rng.errors) == (600, 0)


def test_role_loads_only_the_leader_or_a_follower(etcd3, tmp_path):
    eps = endpoints(etcd3)
    leader, followers = endpoints_with_role(eps, "leader"), endpoints_with_role(eps, "follower")
    assert len(leader) == 1 and sorted(leader + followers) == sorted(eps)
    with grpc.insecure_channel(leader[0]) as ch:
        st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=5)
    assert st.leader == st.header.member_id
    for role, expected in (("leader", leader[0]), ("follower", followers[0])):
        r = run_unary(LoadOptions(eps, total=50, role=role, workdir=str(tmp_path)), "put")
        assert (r.ok, r.errors, r.target) == (50, 0, expected)
    with pytest.raises(ValueError):
        endpoints_with_role(eps, "candidate")


def test_h2load_counts_grpc_errors_that_http_calls_success(etcd3, tmp_path):
    # A read at a future revision fails with OutOfRange inside an HTTP 200 response.
    body = grpc_frame(rpc_pb2.RangeRequest(key=b"k", revision=10 ** 9).SerializeToString())
    runs = plan_runs(endpoints(etcd3)[:1], rq.RANGE, [body], 1, 2, 4, 400, None, None)
    out = run_h2load(runs, str(tmp_path))
    assert out.log.http_ok == 400  # h2load alone would call these successes
    assert out.grpc_errors == 400 and out.ok == 0
    assert any("future revision" in d for d in out.sampled_errors), out.sampled_errors


def test_txn_put_and_grpc_driver_with_sequential_keys(etcd3, tmp_path):
    txn = run_unary(LoadOptions(endpoints(etcd3), conns=2, clients=8, total=500, txn_ops=3, key_space=10,
                                key_size=3, workdir=str(tmp_path)), "txn-put")
    assert (txn.ok, txn.errors) == (500, 0)
    seq = run_unary(LoadOptions(endpoints(etcd3), conns=2, clients=8, total=200, key_size=6, key_space=200,
                                seq=True, driver="grpc", procs=2), "put")
    assert (seq.ok, seq.errors) == (200, 0)
    assert count_keys(endpoints(etcd3)[0], b"000000", b"000200") == 200  # 000000..000199 (txn keys are shorter)


def test_watch_delivers_every_event(etcd3):
    r = run_watch(LoadOptions(endpoints(etcd3), conns=2, watchers=20, watch_keys=4, put_rate=100.0, total=100,
                              procs=2))
    assert r.extra["puts"] == 100 and r.extra["delivered_fraction"] == 1
    assert r.ok == 100 * 20 / 4 and r.latency.count == r.ok


def test_watch_latency_measures_every_put(etcd3):
    r = run_watch_latency(LoadOptions(endpoints(etcd3), conns=2, watchers=10, put_rate=50.0, total=50, procs=2))
    assert r.ok == 50 and r.latency.count == 50 and r.extra["events"] == 500


def test_lease_keepalive(etcd3):
    r = run_lease_keepalive(LoadOptions(endpoints(etcd3), conns=2, clients=10, total=500, procs=2))
    assert (r.ok, r.errors) == (500, 0)


def test_hotkey_through_etcd_grpc_proxy_counts_what_reaches_the_cluster(etcd3, procs, tmp_path):
    proxy = stack.start_etcd_proxy(procs, etcd3)
    metrics = [m.metrics_url for m in etcd3.members]
    lin = run_hotkey(LoadOptions([proxy.listen_addr], conns=2, clients=8, total=400, serializable=False,
                                 cluster_metrics=metrics, workdir=str(tmp_path)))
    # etcd's grpc-proxy now and then answers a few of a burst of linearizable reads with an error
    # (seen in CI: 4 of 400); kvbench counts them as errors, which is what is checked here.
    assert lin.ok + lin.errors == 400 and lin.errors <= 8 and lin.extra["sent"] >= 400
    assert lin.extra["upstream_fraction"] >= 0.95  # etcd's proxy forwards every linearizable read
    ser = run_hotkey(LoadOptions([proxy.listen_addr], conns=2, clients=8, total=2000, serializable=True,
                                 cluster_metrics=metrics, workdir=str(tmp_path)))
    assert ser.ok == 2000 and 0 <= ser.extra["upstream_fraction"] < 0.5  # its cache serves most


def test_mixed_reads_writes_and_watches(etcd3, tmp_path):
    r = run_mixed(LoadOptions(endpoints(etcd3), conns=4, clients=16, total=1000, read_ratio=0.75, watchers=6,
                              workdir=str(tmp_path)))
    assert r.errors == 0 and r.ok == 1000
    assert r.extra["reads_per_s"] > 0 and r.extra["writes_per_s"] > 0 and r.extra["watch_events_per_s"] > 0


def test_cli_json_against_the_python_ceiling_server(procs, tmp_path):
    endpoint = stack.start_null_server(procs)
    out = subprocess.run([sys.executable, "-m", "bench.cli", "put", "--endpoints", endpoint, "--conns", "2",
                          "--clients", "8", "--total", "500", "--json", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert (d["ok"], d["errors"], d["suite"]) == (500, 0, "put")
    assert set(d["latency_us"]) >= {"p50", "p90", "p99", "p99.9"}


@pytest.mark.parametrize("argv", [["range", "--consistency", "x"], ["put", "--total", "1", "--duration", "1"]])
def test_cli_rejects_bad_arguments(argv):
    out = subprocess.run([sys.executable, "-m", "bench.cli", *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2


@pytest.mark.parametrize("driver", ["h2load", "grpc"])
def test_rate_caps_the_load(etcd3, tmp_path, driver):
    r = run_unary(LoadOptions(endpoints(etcd3), conns=6, clients=12, total=None, duration=2.0, rate=200.0,
                              driver=driver, procs=2, workdir=str(tmp_path)), "put")
    assert r.errors == 0
    assert 150 <= r.throughput <= 230, r.throughput
