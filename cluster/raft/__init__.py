"""Raft consensus for kvcluster: a pure, deterministic core plus its storage.

- The core (no I/O, no clock, no global RNG): ``RawNode`` / ``Ready`` (rawnode.py) over
  ``Raft`` (core.py), ``RaftLog`` (log.py), ``ProgressTracker`` (progress.py),
  ``ReadOnlyQueue`` (readonly.py), ``MemoryStorage`` (storage.py), types and ``codec``.
- Storage with file I/O: ``WAL`` (wal.py) and ``SnapshotFiles`` (snapfile.py).

See docs/raft.md for the contract between the core and its driver.
"""
from .config import Config
from .errors import (
    CodecError,
    CompactedError,
    RaftError,
    RequestDropped,
    SnapshotOutOfDateError,
    SnapshotTemporarilyUnavailable,
    StorageError,
    UnavailableError,
)
from .rawnode import PeerStatus, RawNode, Ready, Status
from .storage import MemoryStorage, Storage
from .types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Role,
    Snapshot,
    SnapshotMetadata,
    SoftState,
)

__all__ = [
    "NONE",
    "CodecError",
    "CompactedError",
    "Config",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "PeerStatus",
    "RaftError",
    "RawNode",
    "ReadState",
    "Ready",
    "RequestDropped",
    "Role",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotOutOfDateError",
    "SnapshotTemporarilyUnavailable",
    "SoftState",
    "Status",
    "Storage",
    "StorageError",
    "UnavailableError",
]
