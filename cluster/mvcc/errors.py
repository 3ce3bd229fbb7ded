"""Errors raised by the MVCC store.

The store knows nothing of gRPC: the member maps these to etcd's statuses and message texts
(cluster/server/errors.py). Each error names the etcd error it stands for.
"""

from __future__ import annotations


class MVCCError(Exception):
    """Base class of every error the store raises on purpose."""


class CompactedError(MVCCError):
    """A revision that compaction has removed (etcd: mvcc.ErrCompacted).

    Range/events: revision < compact revision. Compact: revision <= compact revision.
    HashKV: 0 < revision <= compact revision."""

    def __init__(self, revision: int, compact_revision: int):
        super().__init__(f"revision {revision} has been compacted (compact revision {compact_revision})")
        self.revision = revision
        self.compact_revision = compact_revision


class FutureRevisionError(MVCCError):
    """A revision above the current one (etcd: mvcc.ErrFutureRev)."""

    def __init__(self, revision: int, current_revision: int):
        super().__init__(f"revision {revision} is a future revision (current revision {current_revision})")
        self.revision = revision
        self.current_revision = current_revision


class LeaseNotFoundError(MVCCError):
    """Put with, or revoke of, a lease that does not exist (etcd: lease.ErrLeaseNotFound)."""

    def __init__(self, lease_id: int):
        super().__init__(f"lease {lease_id} not found")
        self.lease_id = lease_id


class LeaseExistsError(MVCCError):
    """Grant of a lease id that is already granted (etcd: lease.ErrLeaseExists)."""

    def __init__(self, lease_id: int):
        super().__init__(f"lease {lease_id} already exists")
        self.lease_id = lease_id


class KeyNotFoundError(MVCCError):
    """Put with ignore_value or ignore_lease on a key that does not exist (etcd: ErrKeyNotFound)."""

    def __init__(self, key: bytes):
        super().__init__(f"key {key!r} not found")
        self.key = key


class StoreFullError(MVCCError):
    """The LMDB map (MVCCStore's map_size) is full (etcd: the backend quota; the server raises
    the NOSPACE alarm and answers "etcdserver: mvcc: database space exceeded").

    Raised by a WriteBatch method (commit() included) or continue_compaction(). The batch has
    been aborted: nothing of it is applied, the store stays at its last committed batch, and the
    WriteBatch is closed. Space comes back by compaction + defragment, or by reopening the store
    with a bigger map_size."""

    def __init__(self, map_size: int):
        super().__init__(f"mvcc: database space exceeded (map size {map_size} bytes)")
        self.map_size = map_size
