"""Exceptions raised by the Raft core and its storage."""
from __future__ import annotations


class RaftError(Exception):
    """Base class of every error raised by cluster.raft."""


class RequestDropped(RaftError):
    """A local proposal, conf change or read request was refused.

    Raised when no leader is known, a leader transfer is in progress, a conf change is already
    pending, or this node is not a member. Nothing was appended; the caller may retry later.
    (Requests forwarded to a leader can still be lost silently; callers retry on timeout.)
    """


class StorageError(RaftError):
    """Base class of the log storage errors below."""


class CompactedError(StorageError):
    """The requested index is older than the storage's first index (compacted away)."""


class UnavailableError(StorageError):
    """The requested index is past the storage's last index."""


class SnapshotOutOfDateError(StorageError):
    """The snapshot to apply or create is older than the one the storage already has."""


class SnapshotTemporarilyUnavailable(StorageError):
    """The storage cannot produce a snapshot right now; the leader retries later."""


class CodecError(RaftError):
    """A buffer could not be decoded (truncated or malformed)."""
