"""KV over a real kvcluster process: reads, writes, txns, compaction, and etcd's errors."""

from __future__ import annotations

import os

import grpc
import pytest

from protos.etcdserverpb import rpc_pb2
from cluster.launch import ClusterSpec
from cluster.launch import wait_until

from .conftest import start_member


def _err(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def test_put_get_and_header(member):
    r1 = member.put(b"a", b"1")
    r2 = member.put(b"a", b"2", prev_kv=True)
    assert r2.header.revision == r1.header.revision + 1
    assert r2.prev_kv.value == b"1"
    got = member.get(b"a")
    kv = got.kvs[0]
    assert (kv.value, kv.version, kv.create_revision, kv.mod_revision) == (b"2", 2, r1.header.revision, r2.header.revision)
    h = got.header
    assert h.cluster_id and h.member_id and h.raft_term >= 1 and h.revision == r2.header.revision
    # linearizable and serializable reads agree on a single member
    assert member.get(b"a", serializable=True).kvs == got.kvs


def test_range_options(member):
    for k in (b"k1", b"k2", b"k3", b"l1"):
        member.put(k, b"val-" + k)
    prefix = member.get(b"k", range_end=b"l")
    assert [kv.key for kv in prefix.kvs] == [b"k1", b"k2", b"k3"] and prefix.count == 3
    limited = member.get(b"k", range_end=b"l", limit=2)
    assert len(limited.kvs) == 2 and limited.more and limited.count == 3
    from_key = member.get(b"k2", range_end=b"\0")
    assert [kv.key for kv in from_key.kvs] == [b"k2", b"k3", b"l1"]
    desc = member.get(b"k", range_end=b"l", sort_order=rpc_pb2.RangeRequest.DESCEND)
    assert [kv.key for kv in desc.kvs] == [b"k3", b"k2", b"k1"]
    keys_only = member.get(b"k1", keys_only=True)
    assert keys_only.kvs[0].value == b""
    count_only = member.get(b"k", range_end=b"l", count_only=True)
    assert count_only.count == 3 and not count_only.kvs
    old_rev = member.get(b"k1").kvs[0].mod_revision
    member.put(b"k1", b"new")
    assert member.get(b"k1", revision=old_rev).kvs[0].value == b"val-k1"


def test_range_end_below_key_is_empty_as_etcd(member):
    member.put(b"a")
    member.put(b"b")
    assert not member.get(b"b", range_end=b"a").kvs
    resp = member.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"b", range_end=b"a"))
    assert resp.deleted == 0
    assert len(member.get(b"a", range_end=b"c").kvs) == 2


def test_delete(member):
    member.put(b"d1")
    member.put(b"d2")
    member.put(b"e")
    resp = member.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"d", range_end=b"e", prev_kv=True))
    assert resp.deleted == 2 and [kv.key for kv in resp.prev_kvs] == [b"d1", b"d2"]
    assert not member.get(b"d", range_end=b"e").kvs
    before = member.get(b"e").header.revision
    nothing = member.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"zz"))
    assert nothing.deleted == 0 and nothing.header.revision == before


def test_txn_compare_and_swap(member):
    rev = member.put(b"cas", b"1").header.revision
    cmp = rpc_pb2.Compare(key=b"cas", target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.EQUAL, mod_revision=rev)
    ok = member.kv.Txn(rpc_pb2.TxnRequest(
        compare=[cmp],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"cas", value=b"2")),
                 rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"cas"))],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"cas"))]))
    assert ok.succeeded and ok.responses[1].response_range.kvs[0].value == b"2"
    again = member.kv.Txn(rpc_pb2.TxnRequest(
        compare=[cmp], success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"cas", value=b"3"))],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"cas"))]))
    assert not again.succeeded and again.responses[0].response_range.kvs[0].value == b"2"
    # a read-only txn does not advance the revision, and is served without a log entry
    assert again.header.revision == ok.header.revision
    index = member.maintenance.Status(rpc_pb2.StatusRequest()).raftIndex
    read_only = member.kv.Txn(rpc_pb2.TxnRequest(compare=[cmp], failure=[
        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"cas", serializable=True))]))
    assert not read_only.succeeded and read_only.responses[0].response_range.kvs[0].value == b"2"
    assert member.maintenance.Status(rpc_pb2.StatusRequest()).raftIndex == index
    e = _err(lambda: member.kv.Txn(rpc_pb2.TxnRequest(success=[
        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"cas", revision=10_000))])))
    assert (e.code(), e.details()) == (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")


def test_compaction(member):
    for i in range(5):
        member.put(b"c", str(i).encode())
    current = member.get(b"c").header.revision
    member.kv.Compact(rpc_pb2.CompactionRequest(revision=current - 1, physical=True))
    e = _err(lambda: member.get(b"c", revision=current - 3))
    assert (e.code(), e.details()) == (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
    e = _err(lambda: member.kv.Compact(rpc_pb2.CompactionRequest(revision=current - 2)))
    assert (e.code(), e.details()) == (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
    e = _err(lambda: member.kv.Compact(rpc_pb2.CompactionRequest(revision=current + 100)))
    assert (e.code(), e.details()) == (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
    e = _err(lambda: member.get(b"c", revision=current + 100))
    assert e.details() == "etcdserver: mvcc: required revision is a future revision"
    assert member.get(b"c").kvs[0].value == b"4"


IA = grpc.StatusCode.INVALID_ARGUMENT


def _put_op(key: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=b"x"))


BAD_INPUT = [
    ("empty key put", lambda m: m.put(b""), IA, "etcdserver: key is not provided"),
    ("empty key range", lambda m: m.get(b""), IA, "etcdserver: key is not provided"),
    ("empty key delete", lambda m: m.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"")), IA,
     "etcdserver: key is not provided"),
    ("value over max-request-bytes", lambda m: m.put(b"big", b"x" * 1572864), IA, "etcdserver: request is too large"),
    ("unknown lease", lambda m: m.put(b"l", lease=424242), grpc.StatusCode.NOT_FOUND,
     "etcdserver: requested lease not found"),
    ("ignore_value on missing key", lambda m: m.put(b"nokey", b"", ignore_value=True), IA, "etcdserver: key not found"),
    ("ignore_value with value", lambda m: m.put(b"k", b"v", ignore_value=True), IA, "etcdserver: value is provided"),
    ("txn with 129 ops", lambda m: m.kv.Txn(rpc_pb2.TxnRequest(success=[_put_op(b"k%d" % i) for i in range(129)])),
     IA, "etcdserver: too many operations in txn request"),
    ("txn duplicate keys", lambda m: m.kv.Txn(rpc_pb2.TxnRequest(success=[_put_op(b"x"), _put_op(b"x")])),
     IA, "etcdserver: duplicate key given in txn request"),
    ("txn put inside its delete range", lambda m: m.kv.Txn(rpc_pb2.TxnRequest(success=[
        _put_op(b"b"), rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"c"))])),
     IA, "etcdserver: duplicate key given in txn request"),
    ("txn compare without key", lambda m: m.kv.Txn(rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare()])), IA,
     "etcdserver: key is not provided"),
    ("nested txn puts a key the outer txn puts", lambda m: m.kv.Txn(rpc_pb2.TxnRequest(success=[
        _put_op(b"n"), rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[_put_op(b"n")]))])),
     IA, "etcdserver: duplicate key given in txn request"),
    ("empty request op", lambda m: m.kv.Txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp()])), IA,
     "etcdserver: key not found"),
    # etcd 3.5's check: etcd 3.4.23 crashes on these (a nil sort comparator)
    ("range with an unknown sort order", lambda m: m.kv.Range(rpc_pb2.RangeRequest(key=b"a", sort_order=7)),
     IA, "etcdserver: invalid sort option"),
    ("txn range op with an unknown sort target", lambda m: m.kv.Txn(rpc_pb2.TxnRequest(failure=[
        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"a", sort_target=9, sort_order=1))])),
     IA, "etcdserver: invalid sort option"),
]


def test_bad_input_gets_etcds_status_and_server_keeps_serving(member):
    """One member for every case (each starts nothing new): status and message as etcd 3.4.23,
    and a good write and read succeed after each."""
    for name, call, code, message in BAD_INPUT:
        e = _err(lambda: call(member))
        assert (e.code(), e.details()) == (code, message), name
        rev = member.put(b"after", name.encode()).header.revision
        got = member.get(b"after").kvs[0]
        assert (got.value, got.mod_revision) == (name.encode(), rev), name


def test_nested_txn_may_put_one_key_in_both_branches(member):
    member.put(b"z")
    inner = rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"z", target=rpc_pb2.Compare.VERSION,
                                                        result=rpc_pb2.Compare.EQUAL, version=1)],
                               success=[_put_op(b"both")], failure=[_put_op(b"both")])
    resp = member.kv.Txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_txn=inner)]))
    assert resp.succeeded and resp.responses[0].response_txn.succeeded
    assert member.get(b"both").kvs[0].value == b"x"




def test_txn_with_128_ops_is_accepted(member):
    resp = member.kv.Txn(rpc_pb2.TxnRequest(success=[_put_op(b"k%d" % i) for i in range(128)]))
    assert resp.succeeded and len(resp.responses) == 128


def test_message_over_grpc_limit_is_refused(member):
    # above max-request-bytes + 512 KiB the gRPC layer refuses the message itself (etcd too)
    e = _err(lambda: member.put(b"huge", b"x" * (1572864 + 600 * 1024)))
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert member.put(b"after", b"ok")


def test_garbage_protobuf_body(member):
    raw = member.channel.unary_unary("/etcdserverpb.KV/Range", request_serializer=None,
                                     response_deserializer=None)
    e = _err(lambda: raw(b"\xff\xff\xff\xff", timeout=10))
    # etcd (grpc-go) answers INTERNAL "grpc: error unmarshalling request: ..."; we do the same
    assert e.code() == grpc.StatusCode.INTERNAL
    assert e.details().startswith("grpc: error unmarshalling request")
    assert member.put(b"after", b"ok")


def test_periodic_auto_compaction(procs, tmp_path):
    m = start_member(procs, ClusterSpec.allocate(str(tmp_path), 1),
                     ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1s"])
    first = m.put(b"ac", b"1").header.revision
    m.put(b"ac", b"2")

    def compacted() -> bool:
        m.put(b"tick", b"x")  # keep revisions moving so that a newer sample exists
        try:
            m.get(b"ac", revision=first)
            return False
        except grpc.RpcError as e:
            return e.details() == "etcdserver: mvcc: required revision has been compacted"
    wait_until(compacted, 15, "the periodic compactor to compact past the first revision", interval=0.3)
    assert m.get(b"ac").kvs[0].value == b"2"
    m.channel.close()


def test_member_threads_run_under_sched_batch(member, procs):
    """cluster/cpu_policy.py: every thread the member started (loop, gRPC poller, WAL, apply)."""
    member.put(b"warm", b"up")  # the apply and WAL threads exist once a write went through
    (proc,) = [p for p in procs.procs.values() if p.poll() is None]
    tids = os.listdir(f"/proc/{proc.pid}/task")
    assert len(tids) >= 4
    assert {os.sched_getscheduler(int(tid)) for tid in tids} == {os.SCHED_BATCH}
