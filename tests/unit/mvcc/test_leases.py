"""Leases: grant, revoke (keys deleted in one revision), checkpoint, attachments, persistence."""

from __future__ import annotations

import pytest

from cluster.mvcc import LeaseExistsError, LeaseNotFoundError, LeaseRecord, MVCCStore
from tests.unit.mvcc.ops import Writer, rng


def test_grant_checkpoint_and_list(writer):
    writer.grant(1, ttl=10)
    writer.grant(2, ttl=20)
    writer.batch(lambda b: b.lease_checkpoint(2, 7))
    writer.batch(lambda b: b.lease_checkpoint(404, 7))  # unknown: ignored, as etcd's lessor
    s = writer.store
    assert s.lease(1) == LeaseRecord(1, 10, 0) and s.lease(2) == LeaseRecord(2, 20, 7)
    assert s.lease(3) is None
    assert s.leases() == [LeaseRecord(1, 10, 0), LeaseRecord(2, 20, 7)]
    assert s.current_revision == 1  # leases take no revision
    with pytest.raises(LeaseExistsError):
        writer.grant(1)


def test_revoke_deletes_attached_keys_in_one_revision(writer):
    writer.grant(5)
    writer.put(b"z", lease=5)
    writer.put(b"a", lease=5)
    writer.put(b"m", b"no lease")
    writer.events.clear()
    assert writer.store.lease_keys(5) == [b"a", b"z"]
    assert writer.revoke(5) == 5
    assert [(rev, [(e.type, e.kv.key) for e in evs]) for rev, evs in writer.events] == [(5, [(1, b"a"), (1, b"z")])]
    assert writer.store.range(rng(b"\0", b"\0")).count == 1
    assert writer.store.lease(5) is None and writer.store.lease_keys(5) == []
    with pytest.raises(LeaseNotFoundError):
        writer.revoke(5)


def test_revoke_without_keys_takes_no_revision(writer):
    writer.grant(5)
    assert writer.revoke(5) == 1 and writer.store.current_revision == 1


def test_leases_persist(tmp_path):
    path = str(tmp_path / "db")
    s = MVCCStore(path, map_size=64 << 20)
    w = Writer(s)
    w.grant(8, ttl=30)
    w.put(b"k", lease=8)
    s.close()
    s = MVCCStore(path, map_size=64 << 20)
    try:
        assert s.leases() == [LeaseRecord(8, 30, 0)] and s.lease_keys(8) == [b"k"]
    finally:
        s.close()
