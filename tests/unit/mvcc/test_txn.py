"""Txn: compares (all targets and results, over ranges), branches, nested txns, read-your-writes,
one revision per txn, and etcd's pre-checks."""

from __future__ import annotations

import pytest

from cluster.mvcc import FutureRevisionError, KeyNotFoundError, LeaseNotFoundError
from protos.etcdserverpb import rpc_pb2 as pb
from tests.unit.mvcc.ops import cmp, del_op, put_op, range_op, rng, txn_op


@pytest.fixture
def ab(writer):
    writer.grant(9)
    writer.put(b"a", b"m")  # 2
    writer.put(b"b", b"x", lease=9)  # 3
    writer.put(b"b", b"y", lease=9)  # 4
    return writer


def succeeds(writer, *compares) -> bool:
    return writer.txn(compare=compares).succeeded


@pytest.mark.parametrize(
    "target,value,results",
    [
        ("VALUE", b"m", {"EQUAL": True, "NOT_EQUAL": False, "GREATER": False, "LESS": False}),
        ("VALUE", b"a", {"EQUAL": False, "NOT_EQUAL": True, "GREATER": True, "LESS": False}),
        ("VERSION", 2, {"EQUAL": False, "NOT_EQUAL": True, "GREATER": False, "LESS": True}),
        ("CREATE", 2, {"EQUAL": True, "NOT_EQUAL": False, "GREATER": False, "LESS": False}),
        ("MOD", 1, {"EQUAL": False, "NOT_EQUAL": True, "GREATER": True, "LESS": False}),
        ("LEASE", 0, {"EQUAL": True, "NOT_EQUAL": False, "GREATER": False, "LESS": False}),
    ],
)
def test_compare_targets_and_results_on_one_key(ab, target, value, results):
    for result, expected in results.items():
        assert succeeds(ab, cmp(b"a", target, result, value)) is expected, (target, result)


def test_compare_over_a_range_requires_every_key(ab):
    assert succeeds(ab, cmp(b"a", "VERSION", "GREATER", 0, range_end=b"c"))
    assert not succeeds(ab, cmp(b"a", "VERSION", "EQUAL", 1, range_end=b"c"))  # b has version 2
    assert succeeds(ab, cmp(b"a", "MOD", "LESS", 5, range_end=b"\0"))
    assert succeeds(ab, cmp(b"b", "LEASE", "EQUAL", 9, range_end=b"c"))


def test_compare_on_absent_keys(ab):
    # an empty range compares a zero KeyValue...
    assert succeeds(ab, cmp(b"zz", "VERSION", "EQUAL", 0))
    assert succeeds(ab, cmp(b"x", "CREATE", "LESS", 5, range_end=b"y"))
    assert not succeeds(ab, cmp(b"zz", "MOD", "GREATER", 0))
    # ...except on VALUE, which always fails there
    assert not succeeds(ab, cmp(b"zz", "VALUE", "EQUAL", b""))
    assert not succeeds(ab, cmp(b"zz", "VALUE", "NOT_EQUAL", b"q"))


def test_compare_with_mismatched_target_union_compares_with_zero(ab):
    c = pb.Compare(key=b"a", target=pb.Compare.VERSION, result=pb.Compare.GREATER, value=b"5")
    assert succeeds(ab, c)  # version 1 > 0: the value field is not the version
    c = pb.Compare(key=b"a", target=pb.Compare.VALUE, result=pb.Compare.GREATER, version=3)
    assert succeeds(ab, c)  # b"m" > b""


def test_branches_and_responses(ab):
    resp = ab.txn(
        compare=[cmp(b"a", "VALUE", "EQUAL", b"nope")],
        success=[put_op(b"s")],
        failure=[put_op(b"f", b"1"), range_op(b"f"), del_op(b"a", prev_kv=True)],
    )
    assert not resp.succeeded and resp.header.revision == 5
    put, got, deleted = (r.WhichOneof("response") for r in resp.responses)
    assert (put, got, deleted) == ("response_put", "response_range", "response_delete_range")
    assert resp.responses[0].response_put.header.revision == 5
    assert [kv.value for kv in resp.responses[1].response_range.kvs] == [b"1"]  # read-your-writes
    assert resp.responses[1].response_range.header.revision == 5
    assert resp.responses[2].response_delete_range.prev_kvs[0].value == b"m"
    assert ab.store.range(rng(b"s")).count == 0 and ab.store.range(rng(b"a")).count == 0


def test_one_main_revision_per_txn_with_sub_revisions(ab):
    ab.events.clear()
    resp = ab.txn(success=[put_op(b"x"), put_op(b"y"), del_op(b"a")])
    assert resp.header.revision == 5 and ab.store.current_revision == 5
    assert [(rev, [e.kv.key for e in evs]) for rev, evs in ab.events] == [(5, [b"x", b"y", b"a"])]


def test_read_only_txn_keeps_the_revision(ab):
    resp = ab.txn(success=[range_op(b"a"), del_op(b"nothing")])
    assert resp.header.revision == 4 and ab.store.current_revision == 4
    assert resp.responses[1].response_delete_range.header.revision == 4


def test_nested_compares_see_the_state_before_the_txn(ab):
    inner = pb.TxnRequest(
        compare=[cmp(b"new", "VERSION", "EQUAL", 0)],  # true before the txn, false after the put
        success=[put_op(b"inner-success"), range_op(b"new")],
        failure=[put_op(b"inner-failure")],
    )
    resp = ab.txn(success=[put_op(b"new"), txn_op(inner)])
    assert resp.succeeded
    nested = resp.responses[1].response_txn
    assert nested.succeeded and nested.HasField("header") and nested.header.revision == 0
    assert [kv.key for kv in nested.responses[1].response_range.kvs] == [b"new"]
    assert ab.store.range(rng(b"inner-success")).count == 1
    assert ab.store.range(rng(b"inner-failure")).count == 0
    assert resp.header.revision == 5


def test_deeply_nested_failure_paths(ab):
    leaf = pb.TxnRequest(compare=[cmp(b"a", "VALUE", "EQUAL", b"m")], success=[put_op(b"leaf")])
    middle = pb.TxnRequest(compare=[cmp(b"a", "VALUE", "EQUAL", b"no")], failure=[txn_op(leaf), put_op(b"mid")])
    resp = ab.txn(compare=[cmp(b"b", "LEASE", "EQUAL", 1)], failure=[txn_op(middle)])
    assert not resp.succeeded
    mid = resp.responses[0].response_txn
    assert not mid.succeeded and mid.responses[0].response_txn.succeeded
    assert ab.store.range(rng(b"leaf", b"lef")).count == 1 and ab.store.range(rng(b"mid")).count == 1


def test_checks_on_the_chosen_path_fail_the_whole_txn(ab):
    rev = ab.store.current_revision
    with pytest.raises(LeaseNotFoundError):
        ab.txn(success=[put_op(b"first"), put_op(b"k", lease=404)])
    with pytest.raises(KeyNotFoundError):
        ab.txn(success=[put_op(b"first"), txn_op(pb.TxnRequest(success=[put_op(b"zz", ignore_value=True)]))])
    with pytest.raises(FutureRevisionError):
        ab.txn(success=[put_op(b"first"), range_op(b"a", revision=rev + 1)])
    assert ab.store.current_revision == rev and ab.store.range(rng(b"first")).count == 0
    # the same ops on the branch not taken are not checked
    resp = ab.txn(compare=[cmp(b"a", "VERSION", "EQUAL", 1)], failure=[put_op(b"k", lease=404)])
    assert resp.succeeded and resp.header.revision == rev
