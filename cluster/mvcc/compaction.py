"""Physical compaction, in bounded chunks of keys.

WriteBatch.compact(rev) is *logical* and instant: it raises the compact revision (reads below it
fail from then on) and records a pending job in the meta database: the target revision and a
cursor (the next key ref to visit). The physical work, removing what no reader may ask for any
more, is done by CompactionJob.step() a chunk of keys at a time, inside a writer transaction:
WriteBatch.commit() runs a small chunk (compaction_keys_per_commit, default 100 keys), and
MVCCStore.continue_compaction() a bigger one (compaction_chunk_keys, default 1000) when the
member is idle. So a big history never stalls writes for more than one chunk.

For each key, the revisions with main <= target are removed except the latest one, which is kept
if it is a put; a tombstone at or below the target is removed too, and a key left with no
revision loses its head record. A key is compacted in one step, all or nothing, so reads at or
above the compact revision give the same answers before, during and after the job.
"""

from __future__ import annotations

from typing import Optional

import lmdb

from cluster.mvcc.encoding import ALIVE, F_FLAGS
from cluster.mvcc.keyindex import KeyIndex

DEFAULT_CHUNK_KEYS = 1000  # keys per continue_compaction() step
DEFAULT_KEYS_PER_COMMIT = 100  # keys per commit(): bounds the delay compaction adds to a batch


class CompactionJob:
    """Runs chunks of a pending physical compaction (see the module docstring)."""

    def __init__(self, index: KeyIndex, history: "lmdb._Database"):
        self.index = index
        self.history = history

    def step(self, txn: lmdb.Transaction, target: int, cursor: bytes, max_keys: int) -> Optional[bytes]:
        """Compact up to `max_keys` keys from ref `cursor` on. Returns the next cursor, or None
        when every key has been visited."""
        refs = []
        next_cursor = None
        with txn.cursor(db=self.index.heads) as cur:
            if cur.set_range(cursor):
                for ref in cur.iternext(values=False):
                    if len(refs) == max_keys:
                        next_cursor = ref
                        break
                    refs.append(ref)
        for ref in refs:
            self._compact_key(txn, ref, target)
        return next_cursor

    def _compact_key(self, txn: lmdb.Transaction, ref: bytes, target: int) -> None:
        revisions = self.index.key_revisions(txn, ref, target)
        if not revisions:
            return
        latest_alive = revisions[-1][1][F_FLAGS] & ALIVE
        doomed = revisions[:-1] if latest_alive else revisions
        for rev, _ in doomed:
            self.index.forget_revision(txn, ref, rev)
            txn.delete(rev, db=self.history)
        if not latest_alive and not self.index.has_revisions_after(txn, ref, target):
            self.index.forget_key(txn, ref)
