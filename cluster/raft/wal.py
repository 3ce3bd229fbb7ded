"""Write-ahead log: the durability point of a member's Raft state.

A WAL is a directory of segment files ``<seq:016x>-<first index:016x>.wal``. A segment is a
sequence of records::

    length  u32   payload length (> 0)
    type    u8    SEGMENT | ENTRY | HARD_STATE | SNAPSHOT
    crc     u32   zlib.crc32 over length, type and payload
    payload       codec bytes (see below)

Every segment starts with a SEGMENT record (magic, sequence number, the WAL's metadata), then
the HardState and the newest snapshot marker as of its creation, so that older segments can be
deleted (``release_to``) without losing them. ENTRY payloads are ``codec.encode_entry``;
HARD_STATE ``codec.encode_hard_state``; SNAPSHOT is (index, term) of a snapshot saved in the
snapshot directory.

Durability contract: ``save`` writes records to the OS (one ``write`` per batch); only
``sync`` (fdatasync) makes them durable. A driver calls ``save(...)`` then ``sync()`` once per
Ready, before sending the Ready's after-persist messages. New segment files are written and
fsynced under a temporary name, renamed, and the directory is fsynced, so a segment exists
only with a complete header; a full segment is fsynced before the next one is started.

Recovery (``open``): every record is checked. A bad record at the tail of the *last* segment
with nothing valid after it is a write torn by a crash: the file is truncated there. Any other
bad record (in an earlier segment, at a segment's start, or followed by valid records) is
corruption and raises ``WALCorruptionError`` naming the file and byte offset. Entries are
replayed with overwrite semantics: an entry at an index already seen replaces that entry and
every later one (a new leader truncated the log); a jump forward is only allowed right after a
snapshot marker.

The class is synchronous and blocking (file I/O, fsync) and not thread-safe: the driver calls
it from one worker thread at a time, never from its event loop.
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from cluster.fsutil import fsync_dir

from .codec import ENTRY_OVERHEAD, decode_entry, decode_hard_state, encode_hard_state
from .errors import CodecError, RaftError
from .types import Entry, HardState

DEFAULT_SEGMENT_SIZE = 64 << 20
MAGIC = b"KVRAFTWAL1"

REC_SEGMENT = 1
REC_ENTRY = 2
REC_HARD_STATE = 3
REC_SNAPSHOT = 4
_RECORD_TYPES = frozenset({REC_SEGMENT, REC_ENTRY, REC_HARD_STATE, REC_SNAPSHOT})

_LEN_TYPE = struct.Struct("<IB")
_CRC = struct.Struct("<I")
HEADER_SIZE = _LEN_TYPE.size + _CRC.size
MAX_RECORD_SIZE = 1 << 30
_SEGMENT_HEAD = struct.Struct("<Q")  # sequence number, after MAGIC; metadata follows
_MARKER = struct.Struct("<QQ")
_ENTRY_HEAD = struct.Struct("<BQQI")  # codec's entry layout
_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


class WALError(RaftError):
    """The WAL directory is unusable (missing segments, wrong metadata, misuse)."""


class WALCorruptionError(WALError):
    """A record failed its checks somewhere other than a torn tail."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt WAL record at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SnapshotMarker:
    """A snapshot recorded in the WAL: its file is in the snapshot directory."""

    index: int
    term: int


@dataclass(slots=True)
class WALContents:
    """What recovery found: use entries after the snapshot you restore (``entries_after``)."""

    metadata: bytes
    hard_state: HardState
    snapshots: list[SnapshotMarker]
    entries: list[Entry] = field(default_factory=list)
    truncated_at: tuple[Path, int] | None = None  # where a torn tail was cut, if anywhere

    def entries_after(self, index: int) -> list[Entry]:
        if not self.entries:
            return []
        first = self.entries[0].index
        if index + 1 < first:
            raise WALError(f"WAL entries start at {first}; entries after {index} are missing")
        return self.entries[max(0, index + 1 - first) :]


def encode_record(rtype: int, payload: bytes) -> bytes:
    head = _LEN_TYPE.pack(len(payload), rtype)
    return head + _CRC.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


def _append_entry_records(parts: list, entries: list[Entry]) -> None:
    """``encode_record(REC_ENTRY, encode_entry(e))`` for each entry, without building the
    intermediate strings (the WAL's hot path)."""
    extend = parts.extend
    pack_head, pack_crc, pack_entry = _LEN_TYPE.pack, _CRC.pack, _ENTRY_HEAD.pack
    crc32 = zlib.crc32
    for e in entries:
        data = e.data
        head = pack_head(ENTRY_OVERHEAD + len(data), REC_ENTRY)
        entry_head = pack_entry(e.type, e.term, e.index, len(data))
        extend((head, pack_crc(crc32(data, crc32(entry_head, crc32(head)))), entry_head, data))


def _parse_record(data: bytes, off: int):
    """(type, payload, next offset) of a valid record at ``off``, or the reason it is not."""
    end = len(data)
    if off + HEADER_SIZE > end:
        return "truncated header"
    n, rtype = _LEN_TYPE.unpack_from(data, off)
    if n == 0 or n > MAX_RECORD_SIZE or rtype not in _RECORD_TYPES:
        return "bad length or type"
    start = off + HEADER_SIZE
    if start + n > end:
        return "truncated payload"
    (crc,) = _CRC.unpack_from(data, off + _LEN_TYPE.size)
    payload = data[start : start + n]
    if zlib.crc32(payload, zlib.crc32(data[off : off + _LEN_TYPE.size])) != crc:
        return "checksum mismatch"
    return rtype, payload, start + n


def _valid_record_after(data: bytes, start: int) -> bool:
    """Does any valid record start at or after ``start``? (Distinguishes a torn tail from a
    corrupt record in the middle.)"""
    for off in range(start, len(data) - HEADER_SIZE + 1):
        if not isinstance(_parse_record(data, off), str):
            return True
    return False


def _write_all(fd: int, buf: bytes) -> None:
    view = memoryview(buf)
    while view:
        view = view[os.write(fd, view) :]


_datasync = getattr(os, "fdatasync", os.fsync)


@dataclass(slots=True)
class _Segment:
    seq: int
    first_index: int
    path: Path


class WAL:
    """A segmented write-ahead log (see the module docstring for format and contracts)."""

    def __init__(self, dirpath: Path, segment_size: int) -> None:
        self.dir = Path(dirpath)
        self.segment_size = segment_size
        self._segments: list[_Segment] = []
        self._fd = -1
        self._size = 0
        self._metadata = b""
        self._hard_state = HardState()
        self._snapshot: SnapshotMarker | None = None
        self._last_index = 0
        self._contents: WALContents | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @staticmethod
    def exists(dirpath) -> bool:
        d = Path(dirpath)
        return d.is_dir() and any(_SEGMENT_NAME.match(p.name) for p in d.iterdir())

    @classmethod
    def create(cls, dirpath, metadata: bytes = b"", segment_size: int = DEFAULT_SEGMENT_SIZE):
        """Create a new WAL in ``dirpath`` (created if missing; must hold no WAL)."""
        wal = cls(Path(dirpath), segment_size)
        wal.dir.mkdir(parents=True, exist_ok=True)
        if cls.exists(wal.dir):
            raise WALError(f"{wal.dir} already holds a WAL")
        wal._metadata = metadata
        wal._contents = WALContents(metadata, HardState(), [], [])
        wal._start_segment(seq=0, first_index=0)
        return wal

    @classmethod
    def open(cls, dirpath, segment_size: int = DEFAULT_SEGMENT_SIZE):
        """Open an existing WAL: check every record, cut a torn tail, get ready to append."""
        wal = cls(Path(dirpath), segment_size)
        wal._recover()
        last = wal._segments[-1]
        wal._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
        wal._size = os.fstat(wal._fd).st_size
        return wal

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read_all(self) -> WALContents:
        """The state recovered by ``open`` (or the empty state of a new WAL)."""
        if self._contents is None:
            raise WALError("read_all() is only available once, right after open()/create()")
        contents, self._contents = self._contents, None
        return contents

    # -- writing ----------------------------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: SnapshotMarker | None = None,
    ) -> int:
        """Append a snapshot marker, entries and the HardState (in that order) with one write;
        returns the bytes written (0: nothing to write).

        Not durable until ``sync()``. Rotates to a new segment once this one is full.
        """
        parts = []
        if snapshot is not None:
            parts.append(encode_record(REC_SNAPSHOT, _MARKER.pack(snapshot.index, snapshot.term)))
            self._snapshot = snapshot
            if snapshot.index > self._last_index:
                self._last_index = snapshot.index
        if entries:
            _append_entry_records(parts, entries)
            self._last_index = entries[-1].index
        if hard_state is not None and not hard_state.is_empty():
            parts.append(encode_record(REC_HARD_STATE, encode_hard_state(hard_state)))
            self._hard_state = hard_state
        if not parts:
            return 0
        buf = b"".join(parts)
        _write_all(self._fd, buf)
        self._size += len(buf)
        if self._size >= self.segment_size:
            self._cut()
        return len(buf)

    def sync(self) -> None:
        """Make everything saved so far durable (fdatasync)."""
        _datasync(self._fd)

    def release_to(self, index: int) -> list[Path]:
        """Delete segments holding only entries at or below ``index`` (the newest snapshot's
        index). The segment in use is never deleted. Returns the deleted paths."""
        segments = self._segments
        keep_from = 0
        for k in range(1, len(segments)):
            if segments[k].first_index <= index + 1:
                keep_from = k
        removed = [s.path for s in segments[:keep_from]]
        for path in removed:
            path.unlink()
        if removed:
            del segments[:keep_from]
            fsync_dir(self.dir)
        return removed

    def segment_paths(self) -> list[Path]:
        return [s.path for s in self._segments]

    # -- segments ---------------------------------------------------------------------------

    def _segment_preamble(self, seq: int) -> bytes:
        parts = [encode_record(REC_SEGMENT, MAGIC + _SEGMENT_HEAD.pack(seq) + self._metadata)]
        if not self._hard_state.is_empty():
            parts.append(encode_record(REC_HARD_STATE, encode_hard_state(self._hard_state)))
        if self._snapshot is not None:
            snap = self._snapshot
            parts.append(encode_record(REC_SNAPSHOT, _MARKER.pack(snap.index, snap.term)))
        return b"".join(parts)

    def _start_segment(self, seq: int, first_index: int) -> None:
        path = self.dir / f"{seq:016x}-{first_index:016x}.wal"
        tmp = path.with_name(path.name + ".tmp")
        preamble = self._segment_preamble(seq)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, preamble)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        fsync_dir(self.dir)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._size = len(preamble)
        self._segments.append(_Segment(seq, first_index, path))

    def _cut(self) -> None:
        os.fsync(self._fd)  # a finished segment is entirely durable
        os.close(self._fd)
        self._fd = -1
        self._start_segment(self._segments[-1].seq + 1, self._last_index + 1)

    # -- recovery ---------------------------------------------------------------------------

    def _list_segments(self) -> list[_Segment]:
        if not self.dir.is_dir():
            raise WALError(f"{self.dir} does not exist")
        segments = []
        for p in self.dir.iterdir():
            if p.name.endswith(".wal.tmp"):
                p.unlink()  # a segment whose creation did not complete
                continue
            m = _SEGMENT_NAME.match(p.name)
            if m:
                segments.append(_Segment(int(m.group(1), 16), int(m.group(2), 16), p))
        segments.sort(key=lambda s: s.seq)
        if not segments:
            raise WALError(f"{self.dir} holds no WAL segments")
        for a, b in zip(segments, segments[1:]):
            if b.seq != a.seq + 1:
                raise WALError(f"{self.dir}: segment {a.seq + 1} is missing")
        return segments

    def _recover(self) -> None:
        segments = self._list_segments()
        entries: list[Entry] = []
        snapshots: list[SnapshotMarker] = []
        hard_state = HardState()
        metadata = None
        truncated_at = None
        for k, seg in enumerate(segments):
            data = seg.path.read_bytes()
            is_last = k == len(segments) - 1
            off = 0
            while off < len(data):
                parsed = _parse_record(data, off)
                if isinstance(parsed, str):
                    if not is_last or off == 0:
                        raise WALCorruptionError(seg.path, off, parsed)
                    if _valid_record_after(data, off + 1):
                        raise WALCorruptionError(
                            seg.path, off, f"{parsed}, followed by valid records"
                        )
                    with open(seg.path, "r+b") as f:  # a torn tail: cut it
                        f.truncate(off)
                        os.fsync(f.fileno())
                    truncated_at = (seg.path, off)
                    break
                rtype, payload, next_off = parsed
                try:
                    if off == 0:
                        if rtype != REC_SEGMENT or not payload.startswith(MAGIC):
                            raise WALCorruptionError(seg.path, 0, "not a WAL segment")
                        (seq,) = _SEGMENT_HEAD.unpack_from(payload, len(MAGIC))
                        if seq != seg.seq:
                            raise WALCorruptionError(seg.path, 0, f"sequence {seq} != name")
                        meta = payload[len(MAGIC) + _SEGMENT_HEAD.size :]
                        if metadata is None:
                            metadata = meta
                        elif meta != metadata:
                            raise WALCorruptionError(seg.path, 0, "metadata differs")
                    elif rtype == REC_ENTRY:
                        self._replay_entry(entries, decode_entry(payload), snapshots,
                                           seg.path, off)
                    elif rtype == REC_HARD_STATE:
                        hard_state = decode_hard_state(payload)
                    elif rtype == REC_SNAPSHOT:
                        marker = SnapshotMarker(*_MARKER.unpack(payload))
                        if not snapshots or snapshots[-1] != marker:
                            snapshots.append(marker)
                    else:
                        raise WALCorruptionError(seg.path, off, "segment header in the middle")
                except (CodecError, struct.error) as exc:
                    raise WALCorruptionError(seg.path, off, f"undecodable payload: {exc}") from None
                off = next_off
        self._segments = segments
        self._metadata = metadata or b""
        self._hard_state = hard_state
        self._snapshot = snapshots[-1] if snapshots else None
        self._last_index = max(
            entries[-1].index if entries else 0, self._snapshot.index if self._snapshot else 0
        )
        self._contents = WALContents(self._metadata, hard_state, snapshots, entries, truncated_at)

    @staticmethod
    def _replay_entry(entries, e: Entry, snapshots, path: Path, off: int) -> None:
        if not entries:
            entries.append(e)
            return
        first = entries[0].index
        last = entries[-1].index
        if e.index == last + 1:
            entries.append(e)
        elif e.index <= last:
            # Overwrite: this entry and everything after it replace the old suffix.
            if e.index < first:
                entries.clear()
            else:
                del entries[e.index - first :]
            entries.append(e)
        elif snapshots and snapshots[-1].index + 1 == e.index and snapshots[-1].index > last:
            # Right after installing a snapshot: the log restarts past it.
            entries.clear()
            entries.append(e)
        else:
            raise WALCorruptionError(path, off, f"entry {e.index} leaves a gap after {last}")
