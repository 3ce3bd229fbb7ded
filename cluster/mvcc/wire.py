"""Hand-written protobuf encoding of the few messages on the write path.

Building an mvccpb.KeyValue message and serializing it costs several times more than
concatenating its bytes, and every put and delete needs one. These functions produce exactly the
bytes protobuf's own serializer produces for the same values (fields in number order, proto3
zero values omitted; tests/unit/mvcc/test_wire.py checks it against SerializeToString).
"""

from __future__ import annotations

_SMALL = [bytes((i,)) for i in range(128)]
_U64 = (1 << 64) - 1


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative int, or of a negative int64 as its 10-byte form."""
    if 0 <= n < 128:
        return _SMALL[n]
    n &= _U64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def encode_kv(key: bytes, create_revision: int, mod_revision: int, version: int, value: bytes, lease: int) -> bytes:
    """mvccpb.KeyValue{key, create_revision, mod_revision, version, value, lease}, serialized."""
    parts = []
    if key:
        parts += (b"\x0a", varint(len(key)), key)
    if create_revision:
        parts += (b"\x10", varint(create_revision))
    if mod_revision:
        parts += (b"\x18", varint(mod_revision))
    if version:
        parts += (b"\x20", varint(version))
    if value:
        parts += (b"\x2a", varint(len(value)), value)
    if lease:
        parts += (b"\x30", varint(lease))
    return b"".join(parts)


_DELETE_TYPE = b"\x08\x01"  # Event.type = DELETE; PUT (0) is omitted


def encode_event(is_delete: bool, kv: bytes, prev_kv) -> bytes:
    """mvccpb.Event{type, kv, prev_kv}, serialized; prev_kv None = absent."""
    parts = [_DELETE_TYPE] if is_delete else []
    parts += (b"\x12", varint(len(kv)), kv)
    if prev_kv is not None:
        parts += (b"\x1a", varint(len(prev_kv)), prev_kv)
    return b"".join(parts)
