"""Hash and HashKV: checksums members compare to detect divergence. Both are CRC-32C.

- kv_hash(revision): etcd 3.4's HashKV (mvcc store.HashByRev), bit for bit: the same number
  etcd 3.4 reports for the same history (checked against values measured on etcd 3.4.23, see
  tests/unit/mvcc/test_hash.py). etcd computes CRC-32C over b"key" (its bolt bucket's name), then,
  for each record of that bucket in key (= revision) order with main <= revision, the record's
  bolt key and value:
    bolt key   = 8-byte big-endian main + b"_" + 8-byte big-endian sub, + b"t" for a tombstone
    bolt value = the serialized mvccpb.KeyValue; a tombstone's is KeyValue{key} alone
  A record with main <= compact revision is hashed only if it is in keep(revision): for each key
  alive at `revision`, its latest revision <= `revision` (etcd: treeIndex.Keep). etcd quirk,
  reproduced: when keep(revision) is empty (no key alive at `revision`), every record <= compact
  revision still in the bucket is hashed, i.e. those a finished compaction keeps (the latest
  revision <= compact revision of each key alive at it).
  We store a record as 16-byte (main, sub) -> KeyValue, a tombstone's with its mod_revision too
  (encoding.py, batch.py), so each record is rewritten into etcd's form before hashing. Records at
  or below the compact revision are decided from the key index, not from their presence, so the
  result does not depend on how far physical compaction has got.
- db_hash: the Hash RPC. etcd hashes its whole bolt file (every bucket, incl. members, alarms,
  auth, meta with the consistent index), which has no counterpart here, so no value can match
  etcd's. Ours is CRC-32C over every record of the replicated databases (key index, history,
  leases) plus the current and compact revisions, in a fixed order; the applied index and the
  compaction cursor are left out. Equal on members that applied the same log once physical
  compaction has finished on each (as etcd's, it differs while one is still compacting).
"""

from __future__ import annotations

import lmdb

from google_crc32c import extend  # CRC-32C (Castagnoli), the checksum etcd's Hash and HashKV use
from cluster.mvcc.encoding import ALIVE, F_FLAGS, F_MOD_MAIN, F_MOD_SUB, KEY_STATE, REVISION, key_ref
from cluster.mvcc.keyindex import KeyIndex

_BUCKET = b"key"  # etcd's keyBucketName: the CRC starts with it


def db_hash(txn: lmdb.Transaction, named_dbs: list, current: int, compact: int) -> int:
    h = extend(0, REVISION.pack(current, compact))
    for name, db in named_dbs:
        h = extend(h, name)
        with txn.cursor(db=db) as cur:
            parts: list = []
            for k, v in cur.iternext():
                parts.append(k)
                parts.append(v)
                if len(parts) > 4000:
                    h = extend(h, b"".join(parts))
                    parts.clear()
            h = extend(h, b"".join(parts))
    return h


def kv_hash(txn: lmdb.Transaction, index: KeyIndex, history: "lmdb._Database", revision: int, compact: int) -> int:
    h = extend(0, _BUCKET)
    upper = REVISION.pack(revision + 1, 0)  # records below it are hashed...
    lower = REVISION.pack(compact + 1, 0)  # ...and those below this one only if kept
    keep_empty = None  # is keep(revision) empty? computed on first need
    parts: list = []  # etcd's bolt key + value of each record, CRC'd in bulk (fewer calls)
    add = parts.append
    with txn.cursor(db=history) as cur:
        if not cur.first():
            return h
        for k, v in cur.iternext():
            if k >= upper:
                break
            if v[0] == 0x0A and v[1] < 0x80:  # the usual key of < 128 bytes, inline
                start, end = 2, 2 + v[1]
            else:
                start, end = _key_field(v)
            if k < lower:
                main, sub = REVISION.unpack(k)
                key = v[start:end]
                if not _latest_alive(txn, index, key, revision, main, sub):
                    if keep_empty is None:
                        keep_empty = not _any_alive(txn, index, revision)
                    if not (keep_empty and _latest_alive(txn, index, key, compact, main, sub)):
                        continue
            add(k[:8])
            add(b"_")
            add(k[8:])
            # a put always has a create revision (field 2) right after the key; a tombstone never
            if end < len(v) and v[end] == 0x10:
                add(v)
            else:  # tombstone: etcd's bolt key ends in "t", its value is KeyValue{key} alone
                add(b"t")
                add(v[:end])
            if len(parts) > 4000:
                h = extend(h, b"".join(parts))
                parts.clear()
    return extend(h, b"".join(parts))


def _key_field(v: bytes) -> tuple[int, int]:
    """(start, end) of the key bytes of a serialized KeyValue (field 1, always first)."""
    if not v or v[0] != 0x0A:
        return 0, 0  # empty key: field omitted
    n, shift, pos = 0, 0, 1
    while True:
        b = v[pos]
        n |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return pos, pos + n
        shift += 7


def _latest_alive(txn, index: KeyIndex, key: bytes, revision: int, main: int, sub: int) -> bool:
    """Is (main, sub) the key's latest revision <= `revision`, and a put?"""
    state = index.state_at(txn, key_ref(key), revision)
    return (
        state is not None and state[F_FLAGS] & ALIVE and state[F_MOD_MAIN] == main and state[F_MOD_SUB] == sub
    )


def _any_alive(txn, index: KeyIndex, revision: int) -> bool:
    """Is any key alive at `revision` (is etcd's keep(revision) non-empty)?"""
    with txn.cursor(db=index.heads) as cur:
        for ref, raw in cur.iternext():
            state = KEY_STATE.unpack_from(raw)
            if state[F_MOD_MAIN] > revision:
                state = index.state_at(txn, ref, revision)
            if state is not None and state[F_FLAGS] & ALIVE:
                return True
    return False
