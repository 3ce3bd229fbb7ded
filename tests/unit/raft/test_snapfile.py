"""Snapshot files: atomic save, checksum, retention of the newest N."""
from __future__ import annotations

from pathlib import Path

import pytest

from cluster.raft import ConfState, Snapshot, SnapshotMetadata
from cluster.raft.snapfile import SnapshotCorruptError, SnapshotFiles


def snap(index: int, term: int = 2) -> Snapshot:
    return Snapshot(SnapshotMetadata(index, term, ConfState((1, 2, 3), (4,))), b"state@%d" % index)


def test_snapshot_file_round_trip_and_retention(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path, keep=3)
    for i in (10, 20, 30, 40, 50):
        files.save(snap(i))
    assert files.list() == [(30, 2), (40, 2), (50, 2)]
    assert files.load(40, 2) == snap(40)
    assert files.load_newest() == snap(50)
    assert files.load_newest(acceptable=[(30, 2), (40, 2)]) == snap(40)
    assert files.load_newest(acceptable=[]) is None
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_corrupt_snapshot_file_raises(tmp_path: Path, damage: str) -> None:
    files = SnapshotFiles(tmp_path)
    path = files.save(snap(10))
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-3] ^= 0x01
    elif damage == "truncate":
        data = data[:-5]
    else:
        data[0:8] = b"garbage!"
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorruptError) as err:
        files.load_newest()
    assert err.value.path == path


def test_snapshot_name_must_match_metadata(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path)
    path = files.save(snap(10))
    path.rename(files.path_of(11, 2))
    with pytest.raises(SnapshotCorruptError, match="name"):
        files.load(11, 2)


def test_interrupted_snapshot_save_is_cleaned_up(tmp_path: Path) -> None:
    (tmp_path / "000000000000000a-0000000000000002.snap.tmp").write_bytes(b"half")
    files = SnapshotFiles(tmp_path)
    assert files.list() == [] and not list(tmp_path.iterdir())
