"""Compact binary codec for Raft types, used by the WAL records and by the peer transport.

Layout (little-endian, fixed-width integers via ``struct``):

- Entry:       ``<BQQI`` type, term, index, len(data) + data
- HardState:   ``<QQQ`` term, vote, commit
- ConfChange:  ``<BQI`` type, node_id, len(context) + context
- ConfState:   ``<II`` n_voters, n_learners + voters ``Q``* + learners ``Q``*
- Snapshot:    ``<QQ`` index, term + ConfState + ``<Q`` len(data) + data
- Message:     ``<BQQQQQQBQIIB`` type, to, frm, term, log_term, index, commit, reject,
               reject_hint, n_entries, len(context), has_snapshot
               + context + entries + (snapshot if has_snapshot)

Decoders accept ``bytes``, ``bytearray`` or ``memoryview`` and raise ``CodecError`` on
truncated or malformed input; they never return partially decoded objects.
"""
from __future__ import annotations

import struct

from .errors import CodecError
from .types import (
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

_ENTRY = struct.Struct("<BQQI")
_HARD_STATE = struct.Struct("<QQQ")
_CONF_CHANGE = struct.Struct("<BQI")
_CONF_STATE = struct.Struct("<II")
_SNAP_HEAD = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")
_MESSAGE = struct.Struct("<BQQQQQQBQIIB")

# Fixed per-entry overhead of the encoding; flow control counts it with the payload.
ENTRY_OVERHEAD = _ENTRY.size

_ENTRY_TYPES = tuple(EntryType)
_MESSAGE_TYPES = tuple(MessageType)
_CONF_CHANGE_TYPES = tuple(ConfChangeType)


def _enum(table, value: int, what: str):
    try:
        return table[value]
    except IndexError:
        raise CodecError(f"unknown {what} {value}") from None


def _take(buf, off: int, n: int) -> tuple[bytes, int]:
    end = off + n
    if end > len(buf):
        raise CodecError(f"truncated buffer: need {end} bytes, have {len(buf)}")
    return bytes(buf[off:end]), end


def _append_entries(out: list, entries) -> None:
    pack = _ENTRY.pack
    for e in entries:
        out.append(pack(e.type, e.term, e.index, len(e.data)))
        out.append(e.data)


def _decode_entries(buf, off: int, count: int) -> tuple[list[Entry], int]:
    unpack = _ENTRY.unpack_from
    head = _ENTRY.size
    size = len(buf)
    types = _ENTRY_TYPES
    entries = []
    append = entries.append
    try:
        for _ in range(count):
            etype, term, index, n = unpack(buf, off)
            off += head
            end = off + n
            if end > size:
                raise CodecError("truncated entry data")
            append(Entry(term, index, types[etype], bytes(buf[off:end])))
            off = end
    except struct.error as exc:
        raise CodecError(f"truncated entry header: {exc}") from None
    except IndexError:
        raise CodecError("unknown entry type") from None
    return entries, off


def encode_entry(e: Entry) -> bytes:
    return _ENTRY.pack(e.type, e.term, e.index, len(e.data)) + e.data


def decode_entry(buf) -> Entry:
    entries, off = _decode_entries(buf, 0, 1)
    if off != len(buf):
        raise CodecError("trailing bytes after entry")
    return entries[0]


def encode_hard_state(hs: HardState) -> bytes:
    return _HARD_STATE.pack(hs.term, hs.vote, hs.commit)


def decode_hard_state(buf) -> HardState:
    if len(buf) != _HARD_STATE.size:
        raise CodecError("bad hard state length")
    return HardState(*_HARD_STATE.unpack(buf))


def encode_conf_change(cc: ConfChange) -> bytes:
    return _CONF_CHANGE.pack(cc.type, cc.node_id, len(cc.context)) + cc.context


def decode_conf_change(buf) -> ConfChange:
    try:
        ctype, node_id, n = _CONF_CHANGE.unpack_from(buf, 0)
    except struct.error:
        raise CodecError("truncated conf change") from None
    context, off = _take(buf, _CONF_CHANGE.size, n)
    if off != len(buf):
        raise CodecError("trailing bytes after conf change")
    return ConfChange(_enum(_CONF_CHANGE_TYPES, ctype, "conf change type"), node_id, context)


def _append_snapshot(out: list, snap: Snapshot) -> None:
    md = snap.metadata
    cs = md.conf_state
    out.append(_SNAP_HEAD.pack(md.index, md.term))
    out.append(_CONF_STATE.pack(len(cs.voters), len(cs.learners)))
    ids = (*cs.voters, *cs.learners)
    out.append(struct.pack(f"<{len(ids)}Q", *ids))
    out.append(_U64.pack(len(snap.data)))
    out.append(snap.data)


def _decode_snapshot(buf, off: int) -> tuple[Snapshot, int]:
    try:
        index, term = _SNAP_HEAD.unpack_from(buf, off)
        off += _SNAP_HEAD.size
        nv, nl = _CONF_STATE.unpack_from(buf, off)
        off += _CONF_STATE.size
        ids = struct.unpack_from(f"<{nv + nl}Q", buf, off)
        off += 8 * (nv + nl)
        (n,) = _U64.unpack_from(buf, off)
        off += _U64.size
    except struct.error:
        raise CodecError("truncated snapshot header") from None
    data, off = _take(buf, off, n)
    cs = ConfState(voters=tuple(ids[:nv]), learners=tuple(ids[nv:]))
    return Snapshot(SnapshotMetadata(index, term, cs), data), off


def encode_snapshot(snap: Snapshot) -> bytes:
    out: list = []
    _append_snapshot(out, snap)
    return b"".join(out)


def decode_snapshot(buf) -> Snapshot:
    snap, off = _decode_snapshot(buf, 0)
    if off != len(buf):
        raise CodecError("trailing bytes after snapshot")
    return snap


def encode_message(m: Message) -> bytes:
    out = [
        _MESSAGE.pack(
            m.type,
            m.to,
            m.frm,
            m.term,
            m.log_term,
            m.index,
            m.commit,
            m.reject,
            m.reject_hint,
            len(m.entries),
            len(m.context),
            m.snapshot is not None,
        ),
        m.context,
    ]
    if m.entries:
        _append_entries(out, m.entries)
    if m.snapshot is not None:
        _append_snapshot(out, m.snapshot)
    return b"".join(out)


def decode_message(buf) -> Message:
    try:
        (mtype, to, frm, term, log_term, index, commit, reject, reject_hint, n_entries, n_ctx,
         has_snap) = _MESSAGE.unpack_from(buf, 0)
    except struct.error:
        raise CodecError("truncated message header") from None
    context, off = _take(buf, _MESSAGE.size, n_ctx)
    entries, off = _decode_entries(buf, off, n_entries)
    snapshot = None
    if has_snap:
        snapshot, off = _decode_snapshot(buf, off)
    if off != len(buf):
        raise CodecError("trailing bytes after message")
    return Message(
        _enum(_MESSAGE_TYPES, mtype, "message type"), to, frm, term, log_term, index, entries,
        commit, snapshot, bool(reject), reject_hint, context,
    )
