"""Namespace mapping (etcd clientv3/namespace semantics) and admission token buckets."""

from __future__ import annotations

import pytest

from protos.etcdserverpb import rpc_pb2
from protos.mvccpb import kv_pb2
from proxy.admission import AdmissionControl, Refusal, TokenBucket, client_address
from proxy.namespace import Namespace, prefix_range_end


def test_prefix_range_end():
    assert prefix_range_end(b"ab") == b"ac"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"
    assert prefix_range_end(b"") == b"\0"


def test_namespace_maps_keys_and_range_ends():
    ns = Namespace(b"p/")
    assert ns.key(b"k") == b"p/k"
    assert ns.range_end(b"") == b""
    assert ns.range_end(b"\0") == b"p0"   # from-key stays inside the namespace
    assert ns.range_end(b"z") == b"p/z"
    assert ns.strip(b"p/k") == b"k"
    kv = kv_pb2.KeyValue(key=b"p/k")
    ns.strip_kv(kv)
    assert kv.key == b"k"


def test_identity_namespace_changes_nothing():
    ns = Namespace(b"")
    assert not ns.active
    assert (ns.key(b"k"), ns.range_end(b"\0"), ns.strip(b"k")) == (b"k", b"\0", b"k")


def test_txn_mapping_reaches_nested_ops_and_compares():
    ns = Namespace(b"p/")
    inner = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"n"))])
    txn = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=b"c", range_end=b"\0")],
        success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"r")),
                 rpc_pb2.RequestOp(request_txn=inner)],
        failure=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"d", range_end=b"e"))])
    ns.map_txn_request(txn)
    assert (txn.compare[0].key, txn.compare[0].range_end) == (b"p/c", b"p0")
    assert txn.success[0].request_range.key == b"p/r"
    assert txn.success[1].request_txn.success[0].request_put.key == b"p/n"
    assert (txn.failure[0].request_delete_range.key, txn.failure[0].request_delete_range.range_end) == (b"p/d", b"p/e")


def test_token_bucket_refills_at_rate():
    b = TokenBucket(rate=10, burst=2, now=0.0)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0)
    assert not b.take(0.05)     # half a token
    assert b.take(0.1)          # one token after 0.1 s
    assert b.take(10.0) and b.take(10.0) and not b.take(10.0)  # never more than burst


def test_admission_off_by_default():
    assert not AdmissionControl().enabled


def test_admission_per_client_ignores_the_port_and_per_key_is_per_key():
    now = [0.0]
    adm = AdmissionControl(per_client_rate=2, per_key_rate=1, clock=lambda: now[0])
    adm.admit_client("ipv4:127.0.0.1:1000")
    adm.admit_client("ipv4:127.0.0.1:2000")
    with pytest.raises(Refusal) as r:
        adm.admit_client("ipv4:127.0.0.1:3000")
    assert r.value.limit == "client" and "127.0.0.1" in r.value.reason
    adm.admit_client("ipv4:127.0.0.2:1000")
    adm.admit_key(b"hot")
    adm.admit_key(b"cold")
    with pytest.raises(Refusal):
        adm.admit_key(b"hot")
    now[0] = 1.0
    adm.admit_key(b"hot")


def test_client_address():
    assert client_address("ipv4:10.0.0.1:555") == "10.0.0.1"
    assert client_address("ipv6:[::1]:555") == "::1"
    assert client_address("unix:/tmp/s") == "unix:/tmp/s"
