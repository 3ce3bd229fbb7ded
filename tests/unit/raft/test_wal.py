"""WAL: round trip, torn tails at every byte offset, mid-log corruption, rotation, release."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cluster.raft import Entry, EntryType, HardState
from cluster.raft.wal import (
    HEADER_SIZE,
    WAL,
    SnapshotMarker,
    WALCorruptionError,
    WALError,
)


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, b"data-%d" % i) for i in range(lo, hi + 1)]


def reopen(path: Path, **kw) -> tuple[WAL, object]:
    wal = WAL.open(path, **kw)
    return wal, wal.read_all()


def test_round_trip(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path / "wal", metadata=b"node-1")
    wal.save(HardState(1, 1, 0), ents(1, 3))
    wal.save(HardState(2, 2, 3), ents(4, 5, term=2))
    wal.sync()
    wal.close()
    wal, got = reopen(tmp_path / "wal")
    assert got.metadata == b"node-1"
    assert got.hard_state == HardState(2, 2, 3)
    assert got.entries == ents(1, 3) + ents(4, 5, term=2)
    assert got.truncated_at is None
    wal.save(None, ents(6, 6, term=2))
    wal.sync()
    wal.close()
    _, got = reopen(tmp_path / "wal")
    assert [e.index for e in got.entries] == [1, 2, 3, 4, 5, 6]


def test_create_refuses_an_existing_wal(tmp_path: Path) -> None:
    WAL.create(tmp_path).close()
    assert WAL.exists(tmp_path)
    with pytest.raises(WALError):
        WAL.create(tmp_path)
    with pytest.raises(WALError):
        WAL.open(tmp_path / "nothing-here")


def _written(tmp_path: Path) -> tuple[Path, int, int]:
    """A WAL whose last record is one entry; returns (segment, record start, record end)."""
    wal = WAL.create(tmp_path / "src")
    wal.save(HardState(1, 1, 1), ents(1, 4))
    wal.save(HardState(1, 1, 4), ents(5, 7))
    (segment,) = wal.segment_paths()
    start = segment.stat().st_size
    wal.save(None, [Entry(1, 8, EntryType.NORMAL, b"the last record")])
    wal.sync()
    wal.close()
    return segment, start, segment.stat().st_size


def test_crash_at_every_byte_of_the_last_record(tmp_path: Path) -> None:
    segment, start, end = _written(tmp_path)
    assert end - start == HEADER_SIZE + 21 + len(b"the last record")
    for cut in range(start, end):
        d = tmp_path / f"cut-{cut}"
        shutil.copytree(segment.parent, d)
        copy = d / segment.name
        with open(copy, "r+b") as f:
            f.truncate(cut)
        wal, got = reopen(d)
        assert [e.index for e in got.entries] == list(range(1, 8)), cut
        assert got.hard_state == HardState(1, 1, 4)
        if cut > start:
            assert got.truncated_at == (copy, start)
        assert copy.stat().st_size == start  # the torn tail was cut off
        # The log continues cleanly after the repair.
        wal.save(None, [Entry(2, 8)])
        wal.sync()
        wal.close()
        _, again = reopen(d)
        assert again.entries[-1] == Entry(2, 8) and again.truncated_at is None
        shutil.rmtree(d)


def test_crash_inside_a_batch_keeps_its_complete_records(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path)
    wal.save(HardState(1, 1, 0), ents(1, 2))
    (segment,) = wal.segment_paths()
    start = segment.stat().st_size
    wal.save(HardState(1, 1, 2), ents(3, 6))
    wal.close()
    record = HEADER_SIZE + len(Entry(1, 3, data=b"data-3").data) + 21
    with open(segment, "r+b") as f:
        f.truncate(start + 2 * record + 5)
    _, got = reopen(tmp_path)
    assert [e.index for e in got.entries] == [1, 2, 3, 4]
    assert got.hard_state == HardState(1, 1, 0)


def test_zero_filled_tail_is_a_torn_write(tmp_path: Path) -> None:
    segment, start, end = _written(tmp_path)
    with open(segment, "r+b") as f:
        f.truncate(start)
        f.seek(start)
        f.write(b"\x00" * 4096)
    _, got = reopen(segment.parent)
    assert [e.index for e in got.entries] == list(range(1, 8))


def _record_offsets(segment: Path) -> list[int]:
    from cluster.raft.wal import _parse_record

    data = segment.read_bytes()
    offsets, off = [], 0
    while off < len(data):
        offsets.append(off)
        off = _parse_record(data, off)[2]
    return offsets


@pytest.mark.parametrize("where", ["payload", "crc", "length", "type"])
def test_flipped_bit_in_a_middle_record_names_file_and_offset(tmp_path: Path, where) -> None:
    segment, _, _ = _written(tmp_path)
    offsets = _record_offsets(segment)
    victim = offsets[len(offsets) // 2]
    byte = {"length": 0, "type": 4, "crc": 6, "payload": HEADER_SIZE + 3}[where]
    data = bytearray(segment.read_bytes())
    data[victim + byte] ^= 0x10
    segment.write_bytes(bytes(data))
    with pytest.raises(WALCorruptionError) as err:
        WAL.open(segment.parent)
    assert err.value.path == segment and err.value.offset == victim
    assert str(segment) in str(err.value) and f"offset {victim}" in str(err.value)


def test_bad_record_in_an_earlier_segment_is_corruption_even_at_its_end(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, segment_size=300)
    for i in range(1, 30):
        wal.save(HardState(1, 1, i - 1), ents(i, i))
    wal.sync()
    wal.close()
    first = sorted(tmp_path.glob("*.wal"))[0]
    with open(first, "r+b") as f:
        f.truncate(first.stat().st_size - 3)
    with pytest.raises(WALCorruptionError) as err:
        WAL.open(tmp_path)
    assert err.value.path == first


def test_rotation_and_release(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, metadata=b"m", segment_size=1024)
    for i in range(1, 201):
        wal.save(HardState(3, 1, i - 1), ents(i, i, term=3))
    wal.sync()
    segments = wal.segment_paths()
    assert len(segments) > 5
    wal.save(None, [], snapshot=SnapshotMarker(150, 3))
    wal.sync()
    removed = wal.release_to(150)
    assert removed and all(not p.exists() for p in removed)
    remaining = wal.segment_paths()
    assert remaining == segments[len(removed):]
    wal.close()
    wal, got = reopen(tmp_path)
    assert got.metadata == b"m"
    assert got.hard_state == HardState(3, 1, 199)
    assert got.snapshots[-1] == SnapshotMarker(150, 3)
    assert got.entries[0].index <= 151
    assert [e.index for e in got.entries_after(150)] == list(range(151, 201))
    # The segment holding the snapshot index itself is kept.
    wal.close()


def test_replay_overwrites_a_truncated_suffix(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path)
    wal.save(HardState(1, 1, 3), ents(1, 10, term=1))
    wal.save(HardState(2, 0, 3), ents(6, 8, term=2))  # a new leader replaced 6..10
    wal.close()
    _, got = reopen(tmp_path)
    assert [(e.index, e.term) for e in got.entries] == [(i, 1) for i in range(1, 6)] + [
        (6, 2), (7, 2), (8, 2)
    ]


def test_overwrite_across_released_segments(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, segment_size=400)
    for i in range(1, 21):
        wal.save(HardState(1, 1, 10), ents(i, i))
    wal.save(HardState(2, 0, 10), ents(14, 16, term=2))
    wal.save(None, [], snapshot=SnapshotMarker(12, 1))
    wal.release_to(12)
    wal.close()
    _, got = reopen(tmp_path)
    tail = got.entries_after(12)
    assert [(e.index, e.term) for e in tail] == [(13, 1), (14, 2), (15, 2), (16, 2)]


def test_snapshot_marker_allows_a_jump_and_nothing_else_does(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path / "ok")
    wal.save(HardState(1, 1, 5), ents(1, 5))
    wal.save(HardState(3, 1, 20), ents(21, 22, term=3), snapshot=SnapshotMarker(20, 3))
    wal.close()
    _, got = reopen(tmp_path / "ok")
    assert [e.index for e in got.entries] == [21, 22]
    assert got.snapshots == [SnapshotMarker(20, 3)]
    bad = WAL.create(tmp_path / "bad")
    bad.save(HardState(1, 1, 5), ents(1, 5))
    bad.save(None, ents(9, 9))
    bad.close()
    with pytest.raises(WALCorruptionError, match="gap"):
        WAL.open(tmp_path / "bad")


def test_missing_segment_is_an_error(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path, segment_size=300)
    for i in range(1, 40):
        wal.save(HardState(1, 1, 0), ents(i, i))
    wal.close()
    paths = sorted(tmp_path.glob("*.wal"))
    paths[1].unlink()
    with pytest.raises(WALError, match="missing"):
        WAL.open(tmp_path)


def test_interrupted_segment_creation_is_ignored(tmp_path: Path) -> None:
    wal = WAL.create(tmp_path)
    wal.save(HardState(1, 1, 0), ents(1, 2))
    wal.close()
    (tmp_path / "0000000000000001-0000000000000003.wal.tmp").write_bytes(b"partial")
    _, got = reopen(tmp_path)
    assert [e.index for e in got.entries] == [1, 2]
    assert not list(tmp_path.glob("*.tmp"))
