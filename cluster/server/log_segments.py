"""`LogSegments`: the files of the local log, a directory of append-only segment files.

Each segment is named by the index of its first entry (16 hex digits, `.log`) and holds records
    u32 payload length | u32 crc32(payload) | payload = u64 index | u64 term | data
A record cut short or failing its CRC in the LAST segment is a torn tail (a crash mid-write; such
an entry was never acknowledged): recovery truncates it. The same in an older segment is
corruption, and recovery refuses to start.

A new segment is started by the first append after the active one reached `segment_bytes`, so a
segment is never empty except in a fresh log. `purge(upto)` deletes segments whose entries are
all <= `upto`; the caller must make sure the state machine has those entries durably first.
All methods block on file I/O: call them from the log's worker thread only.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib

from .seam import Entry

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_ENTRY_META = struct.Struct("<QQ")
SEGMENT_BYTES = 64 * 1024 * 1024


class LogCorruptError(Exception):
    """A damaged record before the last segment's tail."""


def encode_record(entry: Entry) -> bytes:
    payload = _ENTRY_META.pack(entry.index, entry.term) + entry.data
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(path: str) -> tuple[list[Entry], int]:
    """All intact records of the file at `path`, and the byte offset where intact records end."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except FileNotFoundError:
        return [], 0
    entries: list[Entry] = []
    off = 0
    while off + _HEADER.size <= len(buf):
        length, crc = _HEADER.unpack_from(buf, off)
        start, end = off + _HEADER.size, off + _HEADER.size + length
        if length < _ENTRY_META.size or end > len(buf):
            break
        payload = buf[start:end]
        if zlib.crc32(payload) != crc:
            break
        index, term = _ENTRY_META.unpack_from(payload)
        entries.append(Entry(index, term, payload[_ENTRY_META.size:]))
        off = end
    return entries, off


def segment_name(first_index: int) -> str:
    return f"{first_index:016x}.log"


class LogSegments:
    """Segment files of one log directory (see module docstring)."""

    def __init__(self, directory: str, segment_bytes: int = SEGMENT_BYTES):
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._firsts: list[int] = []   # first index of each segment, ascending
        self._fd = -1
        self._size = 0

    def recover(self, applied_index: int) -> tuple[list[Entry], Entry | None]:
        """Open the log: returns the entries after `applied_index` and the last entry (None if
        the log is empty). Truncates a torn tail; raises LogCorruptError on older damage."""
        os.makedirs(self.directory, exist_ok=True)
        self._firsts = sorted(int(n[:-4], 16) for n in os.listdir(self.directory)
                              if n.endswith(".log") and len(n) == 20)
        replay: list[Entry] = []
        last: Entry | None = None
        for i, first in enumerate(self._firsts):
            is_last = i == len(self._firsts) - 1
            if not is_last and self._firsts[i + 1] <= applied_index + 1:
                continue  # every entry of this segment is applied already
            path = self._path(first)
            entries, good_end = read_records(path)
            if good_end != os.path.getsize(path):
                if not is_last:
                    raise LogCorruptError(f"{path}: damaged record at offset {good_end}")
                log.warning("wal: truncating torn tail", extra={"fields": {"path": path, "offset": good_end}})
                with open(path, "r+b") as f:
                    f.truncate(good_end)
                    os.fsync(f.fileno())
            replay.extend(e for e in entries if e.index > applied_index)
            if entries:
                last = entries[-1]
        if self._firsts:
            path = self._path(self._firsts[-1])
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            self._size = os.path.getsize(path)
        return replay, last

    def append(self, blob: bytes, first_index: int) -> float:
        """Append the records in `blob` (whose first entry has `first_index`) and fdatasync;
        returns the fsync duration in seconds."""
        if self._fd < 0 or self._size >= self.segment_bytes:
            self._start_segment(first_index)
        view = memoryview(blob)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(blob)
        t0 = time.perf_counter()
        os.fdatasync(self._fd)
        return time.perf_counter() - t0

    def purge(self, upto_index: int) -> int:
        """Delete the segments whose entries are all <= `upto_index` (never the active one);
        returns how many were deleted."""
        deleted = 0
        while len(self._firsts) > 1 and self._firsts[1] <= upto_index + 1:
            os.remove(self._path(self._firsts.pop(0)))
            deleted += 1
        if deleted:
            self._sync_directory()
        return deleted

    @property
    def segment_count(self) -> int:
        return len(self._firsts)

    @property
    def oldest_segment_end(self) -> int | None:
        """The last index of the oldest segment if another follows it (so it may be purged)."""
        return self._firsts[1] - 1 if len(self._firsts) > 1 else None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _start_segment(self, first_index: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self._path(first_index), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._firsts.append(first_index)
        self._size = 0
        self._sync_directory()

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _path(self, first_index: int) -> str:
        return os.path.join(self.directory, segment_name(first_index))
