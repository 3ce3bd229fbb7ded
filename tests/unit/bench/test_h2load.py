"""h2load plumbing that needs no server: output parsing, per-request logs, the gRPC error
estimate, how a load is split over processes, and the request builders."""

import struct

import pytest

from bench import requests as rq
from bench.h2load import DATA_JITTER, H2loadRun, RequestLog, grpc_errors_from_bytes, grpc_frame, parse_summary, \
    plan_runs

# Verbatim shape of h2load 1.52 output (figures from a run against etcd 3.4.23).
SAMPLE = """\
finished in 1.09s, 2753.56 req/s, 187.97KB/s
requests: 3000 total, 3000 started, 3000 done, 3000 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 3000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 204.79KB (209704) total, 5.98KB (6120) headers (space savings 94.63%), 99.49KB (101874) data
                     min         max         mean         sd        +/- sd
time for request:     2.90ms     85.79ms     33.02ms     12.47ms    64.63%
"""


def test_parse_summary():
    s = parse_summary(SAMPLE)
    assert (s.finished_s, s.req_per_s, s.started, s.done, s.succeeded, s.failed) == (1.09, 2753.56, 3000, 3000, 3000, 0)
    assert (s.status_2xx, s.data_bytes) == (3000, 101874)


def test_parse_summary_milliseconds_and_duration_mode():
    text = SAMPLE.replace("finished in 1.09s", "finished in 950.5ms").replace(
        "3000 total, 3000 started, 3000 done", "2036 total, 3036 started, 2036 done")
    s = parse_summary(text)
    assert s.finished_s == pytest.approx(0.9505)
    assert (s.started, s.done) == (3036, 2036)


def test_parse_summary_names_what_is_missing():
    with pytest.raises(ValueError, match="traffic"):
        parse_summary(SAMPLE.replace("traffic:", "trafic:"))


def test_request_log(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text("1000000\t200\t500\n1000100\t200\t1500\n1000200\t-1\t0\n1000300\t200\t700\n")
    log = RequestLog()
    log.read(str(path))
    assert (log.http_ok, log.failed, log.latency.count) == (3, 1, 3)
    assert log.first_start_us == 1_000_000 and log.last_end_us == 1_001_600
    assert log.span_s == pytest.approx(0.0016)
    assert log.latency.percentile(50) == pytest.approx(700, rel=0.004)


def test_grpc_errors_from_bytes():
    assert grpc_errors_from_bytes(1000, 35_000, 35) == 0
    assert grpc_errors_from_bytes(1000, 0, 35) == 1000           # all trailers-only
    assert grpc_errors_from_bytes(1000, 35 * 900, 35) == 100
    # Within the jitter allowance: put down to response sizes drifting, not to errors.
    assert grpc_errors_from_bytes(1000, int(35 * (1000 - 1000 * DATA_JITTER)), 35) == 0
    assert grpc_errors_from_bytes(0, 0, 35) == 0
    # No good sample at all: errors unless DATA says otherwise.
    assert grpc_errors_from_bytes(10, 0, None) == 10
    assert grpc_errors_from_bytes(10, 350, None) == 0


def test_grpc_frame():
    msg = rq.put_request(b"k", b"v").SerializeToString()
    framed = grpc_frame(msg)
    assert framed[0] == 0 and struct.unpack(">I", framed[1:5])[0] == len(msg) and framed[5:] == msg


def test_plan_runs_spreads_endpoints_bodies_and_load():
    runs = plan_runs(["a:1", "b:2", "c:3"], rq.PUT, [b"x", b"y"], 1, 100, 1000, 30001, None, 3000.0)
    assert [r.endpoint for r in runs] == ["a:1", "b:2", "c:3"]
    assert [r.body for r in runs] == [b"x", b"y", b"x"]
    assert sum(r.conns for r in runs) == 100 and {r.streams for r in runs} == {10}
    assert sum(r.total for r in runs) == 30001
    assert all(r.rps_per_conn == 30.0 for r in runs)


def test_plan_runs_never_more_processes_than_connections():
    runs = plan_runs(["a:1", "b:2", "c:3"], rq.RANGE, [b"x"], 8, 2, 2, None, 5.0, None)
    assert len(runs) == 2 and all(r.conns == 1 and r.duration == 5.0 for r in runs)


def test_h2load_argv():
    run = H2loadRun("127.0.0.1:2379", rq.PUT, b"", 10, 5, duration=2.5, rps_per_conn=7.5)
    argv = run.argv("/tmp/b", "/tmp/l")
    assert argv[-1] == "http://127.0.0.1:2379/etcdserverpb.KV/Put"
    for pair in (["-c", "10"], ["-m", "5"], ["-D", "2.5"], ["--rps", "7.5"], ["--log-file", "/tmp/l"]):
        i = argv.index(pair[0])
        assert argv[i:i + 2] == pair
    assert "-n" not in argv and "te:trailers" in argv


def test_keys_and_prefix_end():
    ks = rq.KeySpec(key_size=4, key_space=3)
    assert [ks.key_for(i) for i in range(4)] == [b"0000", b"0001", b"0002", b"0000"]
    with pytest.raises(ValueError):
        rq.KeySpec(key_size=1, key_space=100).key_for(42)
    assert rq.prefix_end(b"abc") == b"abd"
    assert rq.prefix_end(b"a\xff") == b"b"
    assert rq.prefix_end(b"\xff\xff") == b"\x00"


def test_txn_put_request_puts_every_key():
    txn = rq.txn_put_request([b"a", b"b"], b"v")
    assert [op.request_put.key for op in txn.success] == [b"a", b"b"] and not txn.compare
