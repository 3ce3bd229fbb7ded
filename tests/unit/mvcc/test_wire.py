"""The hand-written encoder produces exactly protobuf's bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.mvcc.wire import encode_event, encode_kv
from protos.mvccpb import kv_pb2

int64s = st.one_of(st.integers(0, 300), st.integers(-(1 << 63), (1 << 63) - 1))


@settings(max_examples=150)
@given(st.binary(max_size=300), int64s, int64s, int64s, st.binary(max_size=300), int64s)
def test_encode_kv_matches_protobuf(key, create, mod, version, value, lease):
    fields = dict(key=key, create_revision=create, mod_revision=mod, version=version, value=value, lease=lease)
    assert encode_kv(key, create, mod, version, value, lease) == kv_pb2.KeyValue(**fields).SerializeToString()


@given(st.booleans(), st.binary(max_size=200), st.one_of(st.none(), st.binary(max_size=200)))
def test_encode_event_matches_protobuf(is_delete, key, prev_key):
    kv = kv_pb2.KeyValue(key=key, mod_revision=3)
    ev = kv_pb2.Event(type=kv_pb2.Event.DELETE if is_delete else kv_pb2.Event.PUT, kv=kv)
    prev = None
    if prev_key is not None:
        ev.prev_kv.CopyFrom(kv_pb2.KeyValue(key=prev_key, version=1))
        prev = ev.prev_kv.SerializeToString()
    assert encode_event(is_delete, kv.SerializeToString(), prev) == ev.SerializeToString()
