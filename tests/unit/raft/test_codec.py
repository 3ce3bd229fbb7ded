"""The binary codec round-trips every type and rejects malformed input."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.raft import (
    CodecError,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from cluster.raft.codec import (
    decode_conf_change,
    decode_entry,
    decode_hard_state,
    decode_message,
    decode_snapshot,
    encode_conf_change,
    encode_entry,
    encode_hard_state,
    encode_message,
    encode_snapshot,
)

u64 = st.integers(0, 2**64 - 1)
ids = st.integers(1, 2**64 - 1)
data = st.binary(max_size=64)
entries = st.builds(Entry, u64, u64, st.sampled_from(EntryType), data)
conf_states = st.builds(
    ConfState, st.lists(ids, max_size=5).map(tuple), st.lists(ids, max_size=3).map(tuple)
)
snapshots = st.builds(Snapshot, st.builds(SnapshotMetadata, u64, u64, conf_states), data)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=u64,
    frm=u64,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries, max_size=4),
    commit=u64,
    snapshot=st.none() | snapshots,
    reject=st.booleans(),
    reject_hint=u64,
    context=data,
)


@settings(max_examples=150, deadline=None)
@given(messages)
def test_message_round_trip(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


@settings(max_examples=50, deadline=None)
@given(entries, snapshots, st.builds(HardState, u64, u64, u64),
       st.builds(ConfChange, st.sampled_from(ConfChangeType), u64, data))
def test_value_round_trips(e, snap, hs, cc) -> None:
    assert decode_entry(encode_entry(e)) == e
    assert decode_snapshot(encode_snapshot(snap)) == snap
    assert decode_hard_state(encode_hard_state(hs)) == hs
    assert decode_conf_change(encode_conf_change(cc)) == cc


@settings(max_examples=50, deadline=None)
@given(messages, st.data())
def test_truncated_or_extended_input_is_rejected(m: Message, draw) -> None:
    buf = encode_message(m)
    cut = draw.draw(st.integers(0, len(buf) - 1))
    with pytest.raises(CodecError):
        decode_message(buf[:cut])
    with pytest.raises(CodecError):
        decode_message(buf + b"\x00")


def test_unknown_enum_values_are_rejected() -> None:
    buf = bytearray(encode_message(Message(MessageType.MsgApp)))
    buf[0] = 200
    with pytest.raises(CodecError):
        decode_message(bytes(buf))
    with pytest.raises(CodecError):
        decode_entry(b"\x09" + encode_entry(Entry())[1:])


def test_decoders_accept_memoryview() -> None:
    m = Message(MessageType.MsgApp, to=2, frm=1, entries=[Entry(1, 2, data=b"abc")])
    assert decode_message(memoryview(encode_message(m))) == m
