"""Snapshot files: one file per snapshot, written atomically, checksummed, newest N kept.

File ``<index:016x>-<term:016x>.snap``::

    magic   8 bytes  b"KVSNAP01"
    crc     u32      zlib.crc32 of the body
    length  u64      body length
    body             codec.encode_snapshot(snapshot)

``save`` writes ``<name>.tmp``, fsyncs it, renames it into place and fsyncs the directory: a
snapshot file either exists complete or not at all. ``load`` verifies magic, length, checksum
and that the metadata matches the name, and raises ``SnapshotCorruptError`` otherwise.

Order with the WAL (the driver's job): save the snapshot file first, then the WAL snapshot
marker (``WAL.save(..., snapshot=...)`` + ``sync``), then ``WAL.release_to``. On restart, load
the newest snapshot that has a marker in the WAL.

Synchronous and blocking: call it from a worker thread.
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from cluster.fsutil import fsync_dir

from .codec import decode_snapshot, encode_snapshot
from .errors import CodecError, RaftError
from .types import Snapshot

SNAP_MAGIC = b"KVSNAP01"
_HEAD = struct.Struct("<IQ")
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


class SnapshotCorruptError(RaftError):
    """A snapshot file failed its checks."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: corrupt snapshot file: {reason}")
        self.path = path
        self.reason = reason


class SnapshotFiles:
    """The snapshot directory of a member."""

    def __init__(self, dirpath, keep: int = 5) -> None:
        """`keep`: how many snapshot files to retain (etcd's --max-snapshots); 0 keeps all."""
        if keep < 0:
            raise ValueError("keep must be >= 0")
        self.dir = Path(dirpath)
        self.keep = keep
        self.dir.mkdir(parents=True, exist_ok=True)
        for p in self.dir.glob("*.snap.tmp"):
            p.unlink()  # an interrupted save

    def path_of(self, index: int, term: int) -> Path:
        return self.dir / f"{index:016x}-{term:016x}.snap"

    def list(self) -> list[tuple[int, int]]:
        """(index, term) of every snapshot file, oldest first."""
        found = []
        for p in self.dir.iterdir():
            m = _NAME.match(p.name)
            if m:
                found.append((int(m.group(1), 16), int(m.group(2), 16)))
        return sorted(found)

    def save(self, snap: Snapshot) -> Path:
        """Write ``snap`` atomically and durably, then delete all but the newest ``keep``."""
        md = snap.metadata
        if md.index == 0:
            raise ValueError("cannot save an empty snapshot")
        body = encode_snapshot(snap)
        path = self.path_of(md.index, md.term)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(SNAP_MAGIC + _HEAD.pack(zlib.crc32(body), len(body)))
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        fsync_dir(self.dir)
        self.purge()
        return path

    def load(self, index: int, term: int) -> Snapshot:
        path = self.path_of(index, term)
        data = path.read_bytes()
        head = len(SNAP_MAGIC) + _HEAD.size
        if len(data) < head or not data.startswith(SNAP_MAGIC):
            raise SnapshotCorruptError(path, "bad header")
        crc, length = _HEAD.unpack_from(data, len(SNAP_MAGIC))
        body = data[head:]
        if len(body) != length:
            raise SnapshotCorruptError(path, f"length {len(body)}, header says {length}")
        if zlib.crc32(body) != crc:
            raise SnapshotCorruptError(path, "checksum mismatch")
        try:
            snap = decode_snapshot(body)
        except CodecError as exc:
            raise SnapshotCorruptError(path, str(exc)) from None
        if (snap.metadata.index, snap.metadata.term) != (index, term):
            raise SnapshotCorruptError(path, "metadata does not match the file name")
        return snap

    def load_newest(self, acceptable: Iterable[tuple[int, int]] | None = None) -> Snapshot | None:
        """The newest snapshot, among ``acceptable`` (index, term) pairs if given (e.g. those
        with a WAL marker). A corrupt file raises; it is never skipped silently."""
        allowed = None if acceptable is None else set(acceptable)
        for index, term in reversed(self.list()):
            if allowed is None or (index, term) in allowed:
                return self.load(index, term)
        return None

    def purge(self) -> list[Path]:
        """Delete all but the newest ``keep`` snapshot files (none when ``keep`` is 0)."""
        removed = [self.path_of(i, t) for i, t in self.list()[: -self.keep]] if self.keep else []
        for p in removed:
            p.unlink()
        return removed
