"""Killing the upstream member the proxy is connected to: reads fail over to the others."""

from __future__ import annotations

import time

from protos.etcdserverpb import rpc_pb2
from tests.support.etcd_ref import ETCD_BIN
from tests.support.kvstack import start_kvproxy
from cluster.launch import port_open, wait_until

from .conftest import kv_stub, metric, put


def test_reads_fail_over_when_a_member_dies(procs, etcd3):
    proxy = start_kvproxy(procs, etcd3)
    wait_until(lambda: metric(proxy.metrics_url, "kvproxy_cache_coherent") == 1, 10, "cache watch")
    # The member the proxy is connected to is the one holding its keyspace watch.
    wait_until(lambda: all(port_open(m.metrics_port) for m in etcd3.members), 10, "etcd metrics")
    (victim,) = [m for m in etcd3.members
                 if metric(m.metrics_url, "grpc_server_started_total", grpc_method="Watch") > 0]
    other = next(m for m in etcd3.members if m is not victim)
    put(other.client_port, b"fo", b"before")
    channel, kv = kv_stub(proxy.port)
    with channel:
        ser = rpc_pb2.RangeRequest(key=b"fo", serializable=True)
        lin = rpc_pb2.RangeRequest(key=b"fo")
        assert kv.Range(lin, timeout=5).kvs[0].value == b"before"
        # (serializable: the connected member may apply the write a moment after `other` did)
        wait_until(lambda: kv.Range(ser, timeout=5).kvs == kv.Range(lin, timeout=5).kvs, 5, "member caught up")
        flushes = metric(proxy.metrics_url, "kvproxy_cache_flushes_total")

        procs.kill(f"etcd-{victim.name}")
        killed = time.monotonic()
        # Every read after the kill succeeds (the channel retries reads on UNAVAILABLE and
        # reconnects to m2/m3); none is answered with an error.
        for i in range(20):
            assert kv.Range(ser if i % 2 else lin, timeout=15).kvs[0].value == b"before"
        print(f"\n20 reads after killing {victim.name} took {time.monotonic() - killed:.2f} s")

        # The cache noticed (its watch broke: flush), re-established on a live member, and is
        # coherent again with writes made elsewhere.
        wait_until(lambda: metric(proxy.metrics_url, "kvproxy_cache_flushes_total") > flushes, 10, "flush")
        wait_until(lambda: metric(proxy.metrics_url, "kvproxy_cache_coherent") == 1, 10, "watch back")
        kv.Range(ser, timeout=5)
        put(other.client_port, b"fo", b"after")
        wait_until(lambda: kv.Range(ser, timeout=5).kvs[0].value == b"after", 5, "write after failover")
        assert kv.Put(rpc_pb2.PutRequest(key=b"fo", value=b"through"), timeout=15).header.revision > 0
        assert kv.Range(ser, timeout=5).kvs[0].value == b"through"


def test_reads_wait_out_a_brief_outage_of_the_whole_upstream(procs, etcd1, proxy1):
    m = etcd1.members[0]
    put(m.client_port, b"k", b"v1")
    channel, kv = kv_stub(proxy1.port)
    with channel:
        ser = rpc_pb2.RangeRequest(key=b"k", serializable=True)
        assert kv.Range(ser, timeout=5).kvs[0].value == b"v1"
        procs.kill("etcd-m1")
        # Reads issued during the outage wait for the cluster (up to their deadline) ...
        pending = [kv.Range.future(rpc_pb2.RangeRequest(key=b"k", serializable=s), timeout=30)
                   for s in (True, False)]
        time.sleep(0.5)  # the outage lasts this long; the reads must still be waiting, not failed
        assert not any(f.done() for f in pending)
        procs.start("etcd-m1", [ETCD_BIN, *etcd1.argv(m)])
        # ... and are answered once it is back, without an error.
        assert [f.result().kvs[0].value for f in pending] == [b"v1", b"v1"]
        # The cache was flushed when its watch broke, and is coherent again afterwards.
        wait_until(lambda: metric(proxy1.metrics_url, "kvproxy_cache_coherent") == 1, 20, "watch back")
        put(m.client_port, b"k", b"v2")
        wait_until(lambda: kv.Range(ser, timeout=5).kvs[0].value == b"v2", 5, "write after the outage")
