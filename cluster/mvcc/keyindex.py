"""The persistent key index: where each user key's revisions are, without reading history.

Two LMDB databases, both keyed by key ref (encoding.key_ref):

- ``heads``: ref -> KEY_STATE of the key's latest revision (+ the full key for a long key).
  One record per key that has any revision left in history, alive or tombstoned. Range at the
  current revision finds its keys in this database alone (then fetches their values).
- ``revisions``: ref + revision(16) -> KEY_STATE at that revision. Reads in the past, prev_kv
  lookups and compaction use it.

Every method takes the LMDB transaction to work in: a read transaction for readers, the batch's
write transaction for the writer (which then sees its own uncommitted writes).
"""

from __future__ import annotations

from typing import Optional

import lmdb

from cluster.mvcc.encoding import (
    ALIVE,
    F_FLAGS,
    F_MOD_MAIN,
    KEY_STATE,
    KEY_STATE_MOD_MAIN,
    KEY_STATE_SIZE,
    LONG,
    REVISION_SIZE,
    block_prefix,
    is_long_key,
    key_ref,
    revision_bytes,
    scan_lower_bound,
    scan_upper_bound,
)

# (flags, mod_main, mod_sub, create_revision, version, lease)
KeyState = tuple


class KeyIndex:
    """Reads and writes the ``heads`` and ``revisions`` databases (see the module docstring)."""

    def __init__(self, heads: "lmdb._Database", revisions: "lmdb._Database"):
        self.heads = heads
        self.revisions = revisions

    # -- reads ------------------------------------------------------------------------------
    def head(self, txn: lmdb.Transaction, ref: bytes) -> Optional[KeyState]:
        raw = txn.get(ref, db=self.heads)
        return None if raw is None else KEY_STATE.unpack_from(raw)

    def state_at(self, txn: lmdb.Transaction, ref: bytes, revision: int) -> Optional[KeyState]:
        """The key's state as of main revision `revision` (tombstones included), or None."""
        raw = self._raw_state_at(txn, ref, revision)
        return None if raw is None else KEY_STATE.unpack_from(raw)

    def _raw_state_at(self, txn: lmdb.Transaction, ref: bytes, revision: int) -> Optional[bytes]:
        raw = txn.get(ref, db=self.heads)
        if raw is None or KEY_STATE_MOD_MAIN.unpack_from(raw, 1)[0] <= revision:
            return raw
        return self._past_raw_state(txn, ref, revision)

    def _past_raw_state(self, txn: lmdb.Transaction, ref: bytes, revision: int) -> Optional[bytes]:
        with txn.cursor(db=self.revisions) as cur:
            found = cur.set_range(ref + revision_bytes(revision + 1, 0))
            if not (cur.prev() if found else cur.last()):
                return None
            k = cur.key()
            if len(k) != len(ref) + REVISION_SIZE or not k.startswith(ref):
                return None
            return cur.value()

    def previous_state(self, txn: lmdb.Transaction, ref: bytes, main: int, sub: int) -> Optional[KeyState]:
        """The key's state just before revision (main, sub), or None (no earlier revision kept)."""
        with txn.cursor(db=self.revisions) as cur:
            found = cur.set_range(ref + revision_bytes(main, sub))
            if not (cur.prev() if found else cur.last()):
                return None
            k = cur.key()
            if len(k) != len(ref) + REVISION_SIZE or not k.startswith(ref):
                return None
            return KEY_STATE.unpack(cur.value())

    def scan(self, txn: lmdb.Transaction, key: bytes, end: Optional[bytes], revision: int) -> list:
        """The keys alive at `revision` in the range, in key order, as (ref, packed state): the
        packed state is KEY_STATE bytes (possibly followed by more bytes); unpack it with
        KEY_STATE.unpack_from only where needed, so that counting a big range stays cheap.

        `end` is None for the single key `key`, b"" for every key >= `key`, else the exclusive
        end of [key, end)."""
        if end is None:
            ref = key_ref(key)
            raw = self._raw_state_at(txn, ref, revision)
            return [(ref, raw)] if raw is not None and raw[0] & ALIVE else []
        if end and end <= key:
            return []
        lower = scan_lower_bound(key)
        upper = scan_upper_bound(end) if end else None
        out: list = []
        block: list = []  # (full key, ref, head raw) of the long-key block being gathered
        block_start = b""
        mod_main = KEY_STATE_MOD_MAIN.unpack_from
        with txn.cursor(db=self.heads) as cur:
            if not cur.set_range(lower):
                return out
            for ref, raw in cur.iternext():
                if upper is not None and ref >= upper:
                    break
                flags = raw[0]
                if flags & LONG:
                    prefix = block_prefix(ref)
                    if block and prefix != block_start:
                        self._flush_block(txn, block, key, end, revision, out)
                        block = []
                    block_start = prefix
                    block.append((raw[KEY_STATE_SIZE:], ref, raw))
                    continue
                if block:
                    self._flush_block(txn, block, key, end, revision, out)
                    block = []
                if mod_main(raw, 1)[0] > revision:
                    raw = self._past_raw_state(txn, ref, revision)
                    if raw is None:
                        continue
                    flags = raw[0]
                if flags & ALIVE:
                    out.append((ref, raw))
        if block:
            self._flush_block(txn, block, key, end, revision, out)
        return out

    def _flush_block(self, txn, block: list, key: bytes, end: bytes, revision: int, out: list) -> None:
        """Append the alive members of a long-key block within [key, end), in full-key order."""
        block.sort()
        for full_key, ref, raw in block:
            if full_key < key or (end and full_key >= end):
                continue
            if KEY_STATE_MOD_MAIN.unpack_from(raw, 1)[0] > revision:
                raw = self._past_raw_state(txn, ref, revision)
                if raw is None:
                    continue
            if raw[0] & ALIVE:
                out.append((ref, raw))

    def key_revisions(self, txn: lmdb.Transaction, ref: bytes, up_to_main: int) -> list:
        """(revision bytes, KeyState) of the key's kept revisions with main <= up_to_main, oldest first."""
        out = []
        with txn.cursor(db=self.revisions) as cur:
            if not cur.set_range(ref):
                return out
            n = len(ref)
            for k, v in cur.iternext():
                if len(k) != n + REVISION_SIZE or not k.startswith(ref):
                    break
                state = KEY_STATE.unpack(v)
                if state[F_MOD_MAIN] > up_to_main:
                    break
                out.append((k[n:], state))
        return out

    def has_revisions_after(self, txn: lmdb.Transaction, ref: bytes, main: int) -> bool:
        with txn.cursor(db=self.revisions) as cur:
            if not cur.set_range(ref + revision_bytes(main + 1, 0)):
                return False
            k = cur.key()
            return len(k) == len(ref) + REVISION_SIZE and k.startswith(ref)

    # -- writes (the batch's write transaction) ----------------------------------------------
    def record(self, txn: lmdb.Transaction, ref: bytes, key: bytes, state: KeyState) -> None:
        """Record a new revision of `key` as its latest (head) state."""
        flags = state[F_FLAGS]
        packed = KEY_STATE.pack(*state)
        txn.put(ref + revision_bytes(state[1], state[2]), packed, db=self.revisions)
        txn.put(ref, packed + key if flags & LONG else packed, db=self.heads)

    def forget_revision(self, txn: lmdb.Transaction, ref: bytes, rev: bytes) -> None:
        txn.delete(ref + rev, db=self.revisions)

    def forget_key(self, txn: lmdb.Transaction, ref: bytes) -> None:
        txn.delete(ref, db=self.heads)


def state_flags(key: bytes, alive: bool) -> int:
    return (ALIVE if alive else 0) | (LONG if is_long_key(key) else 0)
