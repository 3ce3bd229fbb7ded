"""Reading history for watch catch-up: the events of a key range from a revision on."""

from __future__ import annotations

from typing import Optional

import lmdb

from cluster.mvcc.encoding import ALIVE, F_FLAGS, REVISION, key_ref
from cluster.mvcc.keyindex import KeyIndex
from cluster.mvcc.ranges import RangeReader
from protos.mvccpb import kv_pb2

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE


class HistoryReader:
    """Turns the history database back into mvccpb Events (MVCCStore.events)."""

    def __init__(self, index: KeyIndex, reader: RangeReader, history: "lmdb._Database"):
        self.index = index
        self.reader = reader
        self.history = history

    def events(
        self, txn: lmdb.Transaction, key: bytes, end: Optional[bytes], start: int, limit: int, current: int, compact: int
    ) -> tuple[list, int]:
        """Events of [key, end) (KeyIndex.scan's `end` convention) with main revision >= start,
        as ([(main, Event)], next revision). The caller has checked start >= compact.

        Stops before the first main revision after `limit` events (limit <= 0: no limit), so one
        revision is never split. Events at main == compact are answered as if physical compaction
        had finished: puts without prev_kv, tombstones dropped (etcd's behaviour)."""
        out: list = []
        last_main = -1
        with txn.cursor(db=self.history) as cur:
            if not cur.set_range(REVISION.pack(max(start, 0), 0)):
                return out, current + 1
            for k, v in cur.iternext():
                main, sub = REVISION.unpack(k)
                if main != last_main and 0 < limit <= len(out):
                    return out, main
                last_main = main
                kv = kv_pb2.KeyValue.FromString(v)
                if not _in_range(kv.key, key, end):
                    continue
                if main <= compact:
                    if kv.version:
                        out.append((main, kv_pb2.Event(type=PUT, kv=kv)))
                    continue
                ev = kv_pb2.Event(type=PUT if kv.version else DELETE, kv=kv)
                prev = self.index.previous_state(txn, key_ref(kv.key), main, sub)
                if prev is not None and prev[F_FLAGS] & ALIVE:
                    ev.prev_kv.ParseFromString(self.reader.kv_bytes(txn, prev))
                out.append((main, ev))
        return out, current + 1


def _in_range(k: bytes, key: bytes, end: Optional[bytes]) -> bool:
    if end is None:
        return k == key
    return k >= key and (not end or k < end)
