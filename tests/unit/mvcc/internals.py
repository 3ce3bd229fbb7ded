"""Read-only peeks at the store's LMDB databases, for tests that check physical effects."""

from __future__ import annotations

from cluster.mvcc.encoding import REVISION


def _env(store):
    return store._gate.env


def history_revisions(store) -> list[tuple[int, int]]:
    env = _env(store)
    with env.env.begin() as txn, txn.cursor(db=env.history) as cur:
        return [REVISION.unpack(k) for k in cur.iternext(values=False)]


def head_count(store) -> int:
    env = _env(store)
    with env.env.begin() as txn:
        return txn.stat(env.index.heads)["entries"]


def revision_entry_count(store) -> int:
    env = _env(store)
    with env.env.begin() as txn:
        return txn.stat(env.index.revisions)["entries"]
