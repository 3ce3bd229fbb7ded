"""Hash and HashKV: checksums members compare to detect divergence.

- db_hash: CRC-32 (zlib) over every record of the replicated databases (key index, history,
  leases) plus the current and compact revisions, in a fixed order. The applied index and the
  pending-compaction cursor are left out: they depend on batch boundaries, not on the log.
  Like etcd's Hash, it differs between members while a physical compaction is still running.
- kv_hash(revision): etcd's HashKV (mvcc HashByRev): a CRC-32 over the history records
  (revision bytes + serialized KeyValue) with main <= revision that would survive a compaction
  at `revision`: every record above the compact revision, plus those at or below it that are the
  latest revision of their key as of `revision` and not a tombstone. It does not depend on how far
  physical compaction has got, so members that applied the same log agree.
"""

from __future__ import annotations

import zlib

import lmdb

from cluster.mvcc.encoding import ALIVE, F_FLAGS, F_MOD_MAIN, F_MOD_SUB, REVISION, key_ref
from cluster.mvcc.keyindex import KeyIndex
from protos.mvccpb import kv_pb2


def db_hash(txn: lmdb.Transaction, named_dbs: list, current: int, compact: int) -> int:
    h = zlib.crc32(REVISION.pack(current, compact))
    for name, db in named_dbs:
        h = zlib.crc32(name, h)
        with txn.cursor(db=db) as cur:
            for k, v in cur.iternext():
                h = zlib.crc32(v, zlib.crc32(k, h))
    return h


def kv_hash(txn: lmdb.Transaction, index: KeyIndex, history: "lmdb._Database", revision: int, compact: int) -> int:
    h = zlib.crc32(b"key")
    with txn.cursor(db=history) as cur:
        if not cur.first():
            return h
        for k, v in cur.iternext():
            main, sub = REVISION.unpack(k)
            if main > revision:
                break
            if main <= compact and not _kept(txn, index, v, revision, main, sub):
                continue
            h = zlib.crc32(v, zlib.crc32(k, h))
    return h


def _kept(txn, index: KeyIndex, kv_bytes: bytes, revision: int, main: int, sub: int) -> bool:
    key = kv_pb2.KeyValue.FromString(kv_bytes).key
    state = index.state_at(txn, key_ref(key), revision)
    return (
        state is not None
        and state[F_FLAGS] & ALIVE
        and state[F_MOD_MAIN] == main
        and state[F_MOD_SUB] == sub
    )
