"""Put options and errors, DeleteRange, revisions and versions."""

from __future__ import annotations

import pytest

from cluster.mvcc import KeyNotFoundError, LeaseNotFoundError
from tests.unit.mvcc.ops import kvs, rng


def kv_of(store, key):
    resp = store.range(rng(key))
    return resp.kvs[0] if resp.kvs else None


def test_fresh_store_is_at_revision_one(store):
    assert store.current_revision == 1 and store.compact_revision == 0 and store.applied_index == 0
    assert store.range(rng(b"\0", b"\0")).header.revision == 1


def test_versions_and_revisions(writer):
    assert writer.put(b"k", b"1").header.revision == 2
    assert writer.put(b"k", b"2").header.revision == 3
    kv = kv_of(writer.store, b"k")
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.value) == (2, 3, 2, b"2")


def test_prev_kv(writer):
    assert not writer.put(b"k", b"1", prev_kv=True).HasField("prev_kv")
    resp = writer.put(b"k", b"2", prev_kv=True)
    assert (resp.prev_kv.key, resp.prev_kv.value, resp.prev_kv.mod_revision) == (b"k", b"1", 2)
    assert not writer.put(b"j", b"2").HasField("prev_kv")


def test_ignore_value_and_ignore_lease(writer):
    writer.grant(7)
    writer.put(b"k", b"keep", lease=7)
    writer.put(b"k", b"ignored", ignore_value=True)
    kv = kv_of(writer.store, b"k")
    assert (kv.value, kv.lease, kv.version) == (b"keep", 0, 2)  # lease=0 given: detached
    assert writer.store.lease_keys(7) == []
    writer.put(b"k", b"v3", lease=7)
    writer.put(b"k", b"v4", ignore_lease=True)
    kv = kv_of(writer.store, b"k")
    assert (kv.value, kv.lease) == (b"v4", 7)
    assert writer.store.lease_keys(7) == [b"k"]


@pytest.mark.parametrize("flag", ["ignore_value", "ignore_lease"])
def test_ignore_flags_on_missing_key(writer, flag):
    writer.put(b"gone")
    writer.delete(b"gone")
    rev = writer.store.current_revision
    for key in (b"never", b"gone"):
        with pytest.raises(KeyNotFoundError):
            writer.put(key, b"v", **{flag: True})
    assert writer.store.current_revision == rev


def test_unknown_lease(writer):
    with pytest.raises(LeaseNotFoundError):
        writer.put(b"k", b"v", lease=99)
    assert writer.store.current_revision == 1 and kv_of(writer.store, b"k") is None


def test_put_moves_key_between_leases(writer):
    writer.grant(1)
    writer.grant(2)
    writer.put(b"k", lease=1)
    writer.put(b"k", lease=2)
    assert writer.store.lease_keys(1) == [] and writer.store.lease_keys(2) == [b"k"]


def test_delete_range_counts_prev_kvs_and_revisions(writer):
    for k in (b"a", b"b", b"c"):
        writer.put(k, k.upper())
    resp = writer.delete(b"a", b"c", prev_kv=True)
    assert resp.deleted == 2 and resp.header.revision == 5
    assert [(kv.key, kv.value) for kv in resp.prev_kvs] == [(b"a", b"A"), (b"b", b"B")]
    assert kvs(writer.store.range(rng(b"\0", b"\0"))) == [(b"c", b"C")]
    nothing = writer.delete(b"zz", prev_kv=True)
    assert nothing.deleted == 0 and nothing.header.revision == 5 and writer.store.current_revision == 5
    assert writer.delete(b"\0", b"\0").deleted == 1


def test_recreated_key_starts_a_new_generation(writer):
    writer.put(b"k", b"1")
    writer.put(b"k", b"2")
    writer.delete(b"k")
    writer.put(b"k", b"3")
    kv = kv_of(writer.store, b"k")
    assert (kv.create_revision, kv.mod_revision, kv.version) == (5, 5, 1)


def test_delete_detaches_lease(writer):
    writer.grant(5)
    writer.put(b"k", lease=5)
    writer.delete(b"k")
    assert writer.store.lease_keys(5) == []


def test_failed_batch_is_aborted(writer):
    writer.put(b"k", b"1")
    with pytest.raises(RuntimeError):
        with writer.store.begin() as b:
            from protos.etcdserverpb import rpc_pb2 as pb

            b.put(pb.PutRequest(key=b"k", value=b"2"))
            raise RuntimeError("apply failed")
    assert kv_of(writer.store, b"k").value == b"1" and writer.store.current_revision == 2
    writer.put(b"k", b"3")  # a new batch can start
    assert kv_of(writer.store, b"k").mod_revision == 3


def test_big_values_round_trip(writer):
    big = bytes(range(256)) * 6000  # 1.5 MB, etcd's default request size limit
    writer.put(b"big", big)
    writer.put(b"big", b"small", prev_kv=True)
    s = writer.store
    assert s.range(rng(b"big", revision=2)).kvs[0].value == big
    assert s.range(rng(b"big")).kvs[0].value == b"small"
