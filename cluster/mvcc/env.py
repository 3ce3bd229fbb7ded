"""The store's LMDB environment: its databases, and the gate that lets defragment swap it.

One LMDB environment (a directory holding data.mdb) with these databases:

  meta        b"state" -> current revision, compact revision, applied index;
              b"compaction" -> pending physical compaction (target revision + cursor)
  heads       key ref -> latest key state            } the persistent key index
  revisions   key ref + revision -> key state        } (keyindex.py)
  history     revision (main, sub) -> serialized mvccpb.KeyValue (a tombstone: key and
              mod_revision only, version 0)
  leases      lease id -> (granted ttl, checkpointed remaining ttl)
  lease_keys  lease id + key ref -> user key
  auth        the auth store's records (cluster/server/auth/store.py: users, roles, enabled flag,
              auth revision), opaque to the MVCC store; written by WriteBatch.auth_put/auth_delete
              in the batch of the entry that changed them. Not hashed (etcd's Hash covers its
              auth buckets too: a deviation).

Commits do not fsync (sync=False, metasync=False): the Raft log above is the durability point, and
the applied index is committed in the same LMDB transaction as the data it covers.
"""

from __future__ import annotations

import threading

import lmdb

from cluster.mvcc.compaction import CompactionJob
from cluster.mvcc.encoding import META_STATE, META_STATE_LAYOUT
from cluster.mvcc.history import HistoryReader
from cluster.mvcc.keyindex import KeyIndex
from cluster.mvcc.ranges import RangeReader

DEFAULT_MAP_SIZE = 8 << 30  # 8 GiB of address space; the file is sparse and grows as needed
DATA_FILE = "data.mdb"
_DB_NAMES = (b"meta", b"heads", b"revisions", b"history", b"leases", b"lease_keys", b"auth")
# hashed by Hash, in this order (meta is summarised by the current and compact revisions)
_HASHED_DBS = (b"heads", b"revisions", b"history", b"leases", b"lease_keys")


class StoreEnv:
    """One opened LMDB environment and the helpers bound to its database handles."""

    def __init__(self, path: str, map_size: int):
        self.env = lmdb.open(
            path,
            map_size=map_size,
            max_dbs=len(_DB_NAMES),
            max_readers=1024,
            sync=False,
            metasync=False,
            readahead=False,
            lock=True,
        )
        dbs = {name: self.env.open_db(name) for name in _DB_NAMES}
        self.meta = dbs[b"meta"]
        self.history = dbs[b"history"]
        self.leases = dbs[b"leases"]
        self.lease_keys = dbs[b"lease_keys"]
        self.auth = dbs[b"auth"]
        self.index = KeyIndex(dbs[b"heads"], dbs[b"revisions"])
        self.reader = RangeReader(self.index, self.history)
        self.history_reader = HistoryReader(self.index, self.reader, self.history)
        self.compaction = CompactionJob(self.index, self.history)
        self.hashed = [(name, dbs[name]) for name in _HASHED_DBS]
        self.all_dbs = list(dbs.values())

    def state(self, txn: lmdb.Transaction) -> tuple[int, int, int]:
        """(current revision, compact revision, applied index) as of `txn`."""
        raw = txn.get(META_STATE, db=self.meta)
        return META_STATE_LAYOUT.unpack(raw) if raw is not None else (1, 0, 0)


class EnvGate:
    """Lets readers share the environment while defragment() swaps it for a new one."""

    def __init__(self, env: StoreEnv):
        self.env = env
        self._cond = threading.Condition()
        self._readers = 0
        self._swapping = False

    def acquire(self) -> StoreEnv:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._readers += 1
            return self.env

    def release(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0 and self._swapping:
                self._cond.notify_all()

    def swap(self, replace) -> None:
        """Wait for readers to leave, block new ones, and set env = replace(old env)."""
        with self._cond:
            self._swapping = True
            while self._readers:
                self._cond.wait()
            try:
                self.env = replace(self.env)
            finally:
                self._swapping = False
                self._cond.notify_all()
