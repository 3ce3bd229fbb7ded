"""cluster.mvcc: etcd's multi-version key-value store on LMDB (contract: docs/mvcc-api.md)."""

from cluster.mvcc import errors
from cluster.mvcc.errors import (
    CompactedError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseExistsError,
    LeaseNotFoundError,
    MVCCError,
    StoreFullError,
)
from cluster.mvcc.store import LeaseRecord, MVCCStore, WriteBatch

__all__ = [
    "MVCCStore",
    "WriteBatch",
    "LeaseRecord",
    "errors",
    "MVCCError",
    "CompactedError",
    "FutureRevisionError",
    "KeyNotFoundError",
    "LeaseExistsError",
    "LeaseNotFoundError",
    "StoreFullError",
]
