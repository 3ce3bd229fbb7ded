"""The issue's watch fan-out benchmark: 5,000 watch streams on one key (50 connections x 100
streams, driven by 5 processes) through `kvproxy`, then through etcd 3.4.23's grpc-proxy in the
same run, in front of the same 3-member etcd 3.4.23.

For ours: the cluster sees at most 1 watcher per proxy worker for the key, every watcher receives
all 10 events (the same ones, in order), proxy RSS < 768 MiB. For etcd's grpc-proxy the same
figures are measured and printed, not asserted. Figures: docs/proxy-watch.md.
"""

from __future__ import annotations

import os
import time

import grpc
import pytest

from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from tests.support.etcd_ref import ETCD_BIN
from tests.support.kvstack import ProxySpec
from cluster.launch import port_open, wait_until

from .harness import metric_value, start_healthy_kvproxy
from .watch_load import WatchLoad

PROCESSES, CONNECTIONS, STREAMS, EVENTS = 5, 10, 100, 10
WATCHERS = PROCESSES * CONNECTIONS * STREAMS
RSS_LIMIT_MIB = 768


def group_rss_mib(pid: int) -> float:
    """Resident memory of every process in `pid`'s process group (the proxy and its workers)."""
    total_kib = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                pgrp = int(f.read().rsplit(")", 1)[1].split()[2])
            if pgrp != pid:
                continue
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kib += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total_kib / 1024


def cluster_watchers(spec) -> float:
    return sum(metric_value(m.metrics_url, "etcd_debugging_mvcc_watcher_total") for m in spec.members)


def metrics_up(spec) -> bool:
    try:
        cluster_watchers(spec)
        return True
    except OSError:
        return False


def measure(spec, addr: str, pid: int, key: str) -> dict:
    wait_until(lambda: metrics_up(spec), 10, "the members' metrics endpoints")
    before = cluster_watchers(spec)
    channel = grpc.insecure_channel(spec.endpoints.split(",")[0])
    kv = rpc_pb2_grpc.KVStub(channel)
    load = WatchLoad(addr, key, PROCESSES, CONNECTIONS, STREAMS, EVENTS, timeout=240)
    try:
        t0 = time.monotonic()
        streams = load.start()
        established_s = time.monotonic() - t0
        upstream_watchers = cluster_watchers(spec) - before
        rss_mib = group_rss_mib(pid)
        t1 = time.monotonic()
        for i in range(EVENTS):
            kv.Put(rpc_pb2.PutRequest(key=key.encode(), value=b"v%d" % i), timeout=10)
        results = load.results()
        delivered_s = time.monotonic() - t1
        rss_after_mib = group_rss_mib(pid)
    finally:
        load.close()
        channel.close()
    return {
        "streams": streams,
        "upstream_watchers": upstream_watchers,
        "all_received": all(r["ok"] and r["min"] == EVENTS and r["identical"] for r in results),
        "events_delivered": sum(r["streams"] * r["min"] for r in results),
        "same_revisions": len({tuple(r["revisions"]) for r in results}) == 1,
        "establish_s": round(established_s, 1),
        "deliver_s": round(delivered_s, 1),
        "rss_mib": round(max(rss_mib, rss_after_mib)),
    }


@pytest.mark.bench
def test_five_thousand_watchers_ours_vs_etcd_grpc_proxy(procs, etcd3):
    ours = start_healthy_kvproxy(procs, etcd3)
    mine = measure(etcd3, ours.listen_addr, procs.procs["kvproxy"].pid, "fan5k-ours")
    print(f"\nkvproxy: {mine}")

    theirs = ProxySpec(etcd3.endpoints)
    procs.start("etcd-grpc-proxy", [ETCD_BIN, "grpc-proxy", "start", f"--endpoints={etcd3.endpoints}",
                                    f"--listen-addr={theirs.listen_addr}", f"--metrics-addr={theirs.metrics_url}"])
    wait_until(lambda: port_open(theirs.port), 30, "etcd grpc-proxy")
    ref = measure(etcd3, theirs.listen_addr, procs.procs["etcd-grpc-proxy"].pid, "fan5k-etcd")
    print(f"etcd grpc-proxy: {ref}")

    assert mine["streams"] == WATCHERS
    assert mine["upstream_watchers"] <= 1
    assert mine["all_received"] and mine["same_revisions"]
    assert mine["events_delivered"] == WATCHERS * EVENTS
    assert mine["rss_mib"] < RSS_LIMIT_MIB
