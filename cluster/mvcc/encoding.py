"""Byte layouts of the store's LMDB records: revisions, key references and key states.

Key references ("refs") are what the key index is keyed by. LMDB keys are at most 511 bytes,
etcd keys up to ~1.5 MiB, so a ref is built in one of two ways:

- short key (len <= SHORT_KEY_MAX): ``escape(key) + TERMINATOR``. ``escape`` doubles every 0x00
  into ``00 FF``, and the terminator is ``00 01``. This is order-preserving and self-delimiting:
  ``ref(a) < ref(b)`` iff ``a < b``, and no ref is a prefix of another, so a revision can be
  appended to a ref without breaking key order.
- long key: ``escape(key[:SHORT_KEY_MAX]) + LONG_MARK + blake2b-128(key)``, LONG_MARK = ``00 02``.
  All long keys that share their first SHORT_KEY_MAX bytes form one contiguous *block* of refs,
  ordered by digest rather than by key; the block sits exactly where those keys belong among all
  other keys (short keys sort before or after the whole block). Range scans sort a block by the
  full key, which the head record of a long key carries (see keyindex.py).

A ref is at most 2*200 + 2 + 16 = 418 bytes; with a 16-byte revision appended, 434 < 511.
"""

from __future__ import annotations

import hashlib
import struct

SHORT_KEY_MAX = 200
TERMINATOR = b"\x00\x01"
LONG_MARK = b"\x00\x02"
BLOCK_END = b"\x00\x03"  # sorts after every ref of a long-key block, before the next key
DIGEST_SIZE = 16

# A revision (main, sub) as 16 big-endian bytes: byte order is revision order.
REVISION = struct.Struct(">QQ")
REVISION_SIZE = REVISION.size


def revision_bytes(main: int, sub: int) -> bytes:
    return REVISION.pack(main, sub)


def _escape(key: bytes) -> bytes:
    return key.replace(b"\x00", b"\x00\xff") if b"\x00" in key else key


def is_long_key(key: bytes) -> bool:
    return len(key) > SHORT_KEY_MAX


def key_ref(key: bytes) -> bytes:
    """The index reference of a user key (see the module docstring)."""
    if len(key) <= SHORT_KEY_MAX:
        return _escape(key) + TERMINATOR
    return _escape(key[:SHORT_KEY_MAX]) + LONG_MARK + hashlib.blake2b(key, digest_size=DIGEST_SIZE).digest()


def block_prefix(long_ref: bytes) -> bytes:
    """The part of a long key's ref shared by its whole block (everything but the digest)."""
    return long_ref[:-DIGEST_SIZE]


def scan_lower_bound(key: bytes) -> bytes:
    """The smallest ref any user key >= `key` can have.

    For a long `key` that is the start of its block: block members below `key` must be filtered
    by full key."""
    if len(key) <= SHORT_KEY_MAX:
        return _escape(key) + TERMINATOR
    return _escape(key[:SHORT_KEY_MAX]) + LONG_MARK


def scan_upper_bound(end: bytes) -> bytes:
    """A ref above every ref of a user key < `end`.

    For a long `end` that is past its block: block members >= `end` must be filtered by full key."""
    if len(end) <= SHORT_KEY_MAX:
        return _escape(end) + TERMINATOR
    return _escape(end[:SHORT_KEY_MAX]) + BLOCK_END


def short_ref_key(ref: bytes) -> bytes:
    """The user key of a short-key ref (the inverse of key_ref for short keys)."""
    body = ref[: -len(TERMINATOR)]
    return body.replace(b"\x00\xff", b"\x00") if b"\x00" in body else body


# A key's state at one of its revisions: what the key index stores, both as the head (latest)
# record and per revision. Fields: flags, mod_main, mod_sub, create_revision, version, lease.
# A tombstone has flags without ALIVE and create_revision = version = lease = 0.
KEY_STATE = struct.Struct(">BQIqqq")
KEY_STATE_SIZE = KEY_STATE.size
KEY_STATE_MOD_MAIN = struct.Struct(">Q")  # mod_main alone, at offset 1 of a packed KEY_STATE
ALIVE = 1
LONG = 2

F_FLAGS, F_MOD_MAIN, F_MOD_SUB, F_CREATE, F_VERSION, F_LEASE = range(6)

# meta database
META_STATE = b"state"  # current revision, compact revision, applied index
META_STATE_LAYOUT = struct.Struct(">qqq")
META_COMPACTION = b"compaction"  # pending physical compaction: target revision + cursor ref
META_COMPACTION_LAYOUT = struct.Struct(">q")
META_SCHEMA = b"schema"
META_SERVER_PREFIX = b"server/"  # state the server keeps with the data (server_meta / put_server_meta)
SCHEMA_VERSION = b"1"

# leases database: lease id -> (granted ttl, checkpointed remaining ttl)
LEASE_ID = struct.Struct(">q")
LEASE_RECORD = struct.Struct(">qq")
