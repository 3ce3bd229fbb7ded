"""Model-based test: random batches of Put/DeleteRange/Txn (compares, nested ops)/Compact/leases,
random Range and events() reads, reopen, defragment, snapshot, and chunked compaction, applied to
the store and to a plain in-memory model (model.py); every response, error and event must be the
same.

Default run: ~10 s. Bigger run (~10 min): pytest -m soak tests/unit/mvcc/test_model.py
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cluster.mvcc import MVCCError, MVCCStore
from protos.etcdserverpb import rpc_pb2 as pb
from tests.unit.mvcc.model import Model, in_range

LONG = b"L" * 250  # long keys sharing a prefix past the index's short-key limit
KEYS = [b"a", b"b", b"b\x00", b"c", b"d", LONG + b"1", LONG + b"2", LONG]
VALUES = [b"", b"v", b"w", b"zz"]
LEASES = [0, 0, 0, 1, 2, 3]

keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)
# range_end: b"" single key, b"\0" from-key, or an explicit end (possibly below the key)
range_ends = st.one_of(st.just(b""), st.just(b"\x00"), st.sampled_from(KEYS + [b"bb", b"z"]))


@st.composite
def put_requests(draw):
    return pb.PutRequest(
        key=draw(keys),
        value=draw(values),
        lease=draw(st.sampled_from(LEASES)),
        prev_kv=draw(st.booleans()),
        ignore_value=draw(st.integers(0, 4)) == 0,
        ignore_lease=draw(st.integers(0, 4)) == 0,
    )


@st.composite
def delete_requests(draw):
    return pb.DeleteRangeRequest(key=draw(keys), range_end=draw(range_ends), prev_kv=draw(st.booleans()))


@st.composite
def range_requests(draw, revisions):
    filt = st.one_of(st.just(0), revisions)
    return pb.RangeRequest(
        key=draw(st.sampled_from(KEYS + [b"\x00"])),
        range_end=draw(range_ends),
        revision=draw(st.one_of(st.just(0), revisions)),
        limit=draw(st.integers(0, 3)),
        sort_order=draw(st.sampled_from([0, 0, 1, 2])),
        sort_target=draw(st.sampled_from([0, 0, 1, 2, 3, 4])),
        keys_only=draw(st.booleans()),
        count_only=draw(st.integers(0, 5)) == 0,
        min_mod_revision=draw(filt) if draw(st.integers(0, 3)) == 0 else 0,
        max_mod_revision=draw(filt) if draw(st.integers(0, 3)) == 0 else 0,
        min_create_revision=draw(filt) if draw(st.integers(0, 3)) == 0 else 0,
        max_create_revision=draw(filt) if draw(st.integers(0, 3)) == 0 else 0,
    )


@st.composite
def compares(draw):
    target = draw(st.sampled_from([0, 1, 2, 3, 4]))  # VERSION CREATE MOD VALUE LEASE
    # mostly the matching oneof field, sometimes another one (etcd then compares with zero)
    field = draw(st.sampled_from(["version", "create_revision", "mod_revision", "value", "lease"]))
    if draw(st.booleans()):
        field = ["version", "create_revision", "mod_revision", "value", "lease"][target]
    value = draw(values) if field == "value" else draw(st.integers(0, 8))
    return pb.Compare(
        key=draw(keys),
        range_end=draw(st.sampled_from([b"", b"", b"\x00", b"c", b"zz"])),
        target=target,
        result=draw(st.sampled_from([0, 1, 2, 3])),
        **{field: value},
    )


def txn_requests(revisions, depth: int = 2):
    ops = [
        st.builds(lambda r: pb.RequestOp(request_put=r), put_requests()),
        st.builds(lambda r: pb.RequestOp(request_delete_range=r), delete_requests()),
        st.builds(lambda r: pb.RequestOp(request_range=r), range_requests(revisions)),
    ]
    if depth > 0:
        ops.append(st.builds(lambda r: pb.RequestOp(request_txn=r), txn_requests(revisions, depth - 1)))
    op_lists = st.lists(st.one_of(*ops), max_size=3)
    return st.builds(
        lambda c, s, f: drop_conflicting_writes(pb.TxnRequest(compare=c, success=s, failure=f)),
        st.lists(compares(), max_size=2),
        op_lists,
        op_lists,
    )


def drop_conflicting_writes(req: pb.TxnRequest) -> pb.TxnRequest:
    """The server rejects txns that write a key twice (etcd's duplicate-key check); keep the test
    to txns it would accept by dropping every write that overlaps an earlier one, anywhere in the
    txn (stricter than etcd, which only looks along each path)."""
    written: list = []  # (key, range_end) of the writes kept

    def overlaps(key, end) -> bool:
        return any(in_range(k, key, end) for k in KEYS if any(in_range(k, wk, we) for wk, we in written))

    def clean(ops):
        kept = []
        for op in ops:
            kind = op.WhichOneof("request")
            if kind == "request_put":
                span = (op.request_put.key, b"")
            elif kind == "request_delete_range":
                span = (op.request_delete_range.key, op.request_delete_range.range_end)
            else:
                if kind == "request_txn":
                    inner = op.request_txn
                    op = pb.RequestOp(request_txn=pb.TxnRequest(compare=inner.compare, success=clean(inner.success), failure=clean(inner.failure)))
                kept.append(op)
                continue
            if overlaps(*span):
                continue
            written.append(span)
            kept.append(op)
        return kept

    return pb.TxnRequest(compare=req.compare, success=clean(req.success), failure=clean(req.failure))


def outcome(fn):
    """(result, None), or (None, name of the MVCCError raised)."""
    try:
        return fn(), None
    except MVCCError as exc:
        return None, type(exc).__name__


class MVCCMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="mvcc-model-")
        self.store = self._open()
        self.model = Model()
        self.applied = 0

    def _open(self) -> MVCCStore:
        return MVCCStore(self.dir, map_size=64 << 20, compaction_chunk_keys=2, compaction_keys_per_commit=1)

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def revisions(self):
        return st.integers(0, self.model.current + 1)

    # -- writes: a batch of requests, each compared with the model ------------------------------
    @rule(data=st.data(), n=st.integers(1, 3))
    def apply_batch(self, data, n):
        revisions = st.integers(0, self.model.current + n + 1)
        requests = data.draw(
            st.lists(
                st.one_of(
                    put_requests().map(lambda r: ("put", r)),
                    delete_requests().map(lambda r: ("delete_range", r)),
                    txn_requests(revisions).map(lambda r: ("txn", r)),
                    revisions.map(lambda r: ("compact", r)),
                    st.tuples(st.sampled_from([1, 2, 3]), st.integers(1, 100)).map(lambda t: ("lease_grant", t)),
                    st.sampled_from([1, 2, 3]).map(lambda i: ("lease_revoke", i)),
                    st.tuples(st.sampled_from([1, 2, 3]), st.integers(0, 50)).map(lambda t: ("lease_checkpoint", t)),
                ),
                min_size=n,
                max_size=n,
            )
        )
        expected_changes = []
        with self.store.begin() as batch:
            for kind, req in requests:
                got, got_err = outcome(lambda: self._store_op(batch, kind, req))
                want, want_err = outcome(lambda: self._model_op(kind, req))
                assert got_err == want_err, (kind, req)
                if want_err is None:
                    response, changes = want
                    assert got == response, (kind, req)
                    expected_changes.extend(changes)
            self.applied += 1
            changes = batch.commit(self.applied)
        assert changes == expected_changes

    @staticmethod
    def _store_op(batch, kind, req):
        if kind == "compact":
            return batch.compact(req)
        if kind == "lease_grant":
            return batch.lease_grant(*req)
        if kind == "lease_checkpoint":
            return batch.lease_checkpoint(*req)
        return getattr(batch, kind)(req)

    def _model_op(self, kind, req):
        m = self.model
        if kind == "compact":
            return m.compact_to(req), []
        if kind == "lease_grant":
            return m.lease_grant(*req), []
        if kind == "lease_checkpoint":
            return m.lease_checkpoint(*req), []
        if kind == "lease_revoke":
            return m.lease_revoke(req)
        return getattr(m, kind)(req)

    # -- reads -----------------------------------------------------------------------------------
    @rule(data=st.data())
    def range(self, data):
        req = data.draw(range_requests(self.revisions()))
        assert outcome(lambda: self.store.range(req)) == outcome(lambda: self.model.range(req)), req

    @rule(key=st.sampled_from(KEYS + [b"\x00"]), end=range_ends, data=st.data(), limit=st.integers(1, 4))
    def events(self, key, end, data, limit):
        start = data.draw(st.integers(max(0, self.model.compact - 1), self.model.current + 1))
        got = outcome(lambda: self.store.events(key, end, start, limit))
        want = outcome(lambda: self.model.events(key, end, start, limit))
        assert got == want, (key, end, start, limit)

    @rule(data=st.data())
    def hash_kv(self, data):
        rev = data.draw(st.integers(0, self.model.current + 1))
        assert outcome(lambda: self.store.hash_kv(rev)) == outcome(lambda: self.model.hash_kv(rev)), rev

    @rule(lease_id=st.sampled_from([1, 2, 3]))
    def lease_state(self, lease_id):
        record = self.store.lease(lease_id)
        expected = self.model.leases.get(lease_id)
        assert (None if record is None else (record.ttl, record.remaining_ttl)) == expected
        if expected is not None:
            assert self.store.lease_keys(lease_id) == self.model.lease_keys(lease_id)

    # -- lifecycle -------------------------------------------------------------------------------
    @rule()
    def reopen(self):
        self.store.close()
        self.store = self._open()
        assert self.store.applied_index == self.applied

    @rule()
    def defragment(self):
        self.store.defragment()

    @rule()
    def snapshot_reads_the_same(self):
        copy_dir = tempfile.mkdtemp(prefix="mvcc-model-snap-", dir=self.dir)
        with open(os.path.join(copy_dir, "data.mdb"), "wb") as f:
            self.store.snapshot(f)
        copy = MVCCStore(copy_dir, map_size=64 << 20)
        try:
            everything = pb.RangeRequest(key=b"\x00", range_end=b"\x00")
            assert copy.range(everything) == self.model.range(everything)
            assert copy.applied_index == self.applied
        finally:
            copy.close()
            shutil.rmtree(copy_dir)

    @precondition(lambda self: self.store.compaction_pending)
    @rule()
    def continue_compaction(self):
        self.store.continue_compaction()

    @invariant()
    def same_state(self):
        assert (self.store.current_revision, self.store.compact_revision) == (self.model.current, self.model.compact)
        everything = pb.RangeRequest(key=b"\x00", range_end=b"\x00")
        assert self.store.range(everything) == self.model.range(everything)
        assert self.store.hash_kv(0) == self.model.hash_kv(0)


MVCCMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)
test_mvcc_matches_model = MVCCMachine.TestCase


class SoakMVCCMachine(MVCCMachine):
    pass


SoakMVCCMachine.TestCase.settings = settings(
    max_examples=400, stateful_step_count=60, deadline=None, suppress_health_check=list(HealthCheck)
)
test_mvcc_matches_model_soak = pytest.mark.soak(SoakMVCCMachine.TestCase)
