"""`MemberWAL`: the member's Raft log on disk (cluster/raft's `WAL`), stamped with its identity.

The WAL's metadata records the member id and the cluster id it was created for, as etcd's WAL
metadata does. Opening a data dir written for another member or another cluster (other
--initial-cluster, --initial-cluster-token or --name) is refused with `BootstrapError`, before
anything is written.

Snapshots (log compaction, issue 4): the member's snapshot files (`SnapshotFiles`, in `snap/`
beside `wal/`, as etcd's member/snap) hold only Raft metadata (index, term, ConfState); the state
machine image is the MVCC store itself. `compact()` follows the core's order: snapshot file, then
the WAL marker + fsync, then `release_to` (the caller first makes the store durable up to the
snapshot index). A store image received from the leader waits in `snap/` as
`<index>-<term>.snap.db` until the store has installed it (`received_db_path`), so a crash between
the WAL marker and the install is repaired at restart.

Blocking and single-threaded: the driver calls it from its `wal` worker thread only.
"""

from __future__ import annotations

import logging
import struct
import time
from pathlib import Path
from typing import Callable

from cluster.failpoints import failpoint
from cluster.raft import Entry, HardState, Snapshot
from cluster.raft.snapfile import SnapshotFiles
from cluster.raft.wal import DEFAULT_SEGMENT_SIZE, WAL, SnapshotMarker

from .errors import BootstrapError

log = logging.getLogger(__name__)

_IDENTITY = struct.Struct(">QQ")  # member id, cluster id
_FP_FSYNC = failpoint("raftWalFsync")  # None unless KVCLUSTER_FAILPOINTS enables it (a slow disk)


class MemberWAL:
    """Implements driver.RaftWAL over cluster.raft.wal.WAL in `dirpath`."""

    def __init__(self, dirpath: str, member_id: int, cluster_id: int, *,
                 snap_dir: str | None = None, segment_size: int = DEFAULT_SEGMENT_SIZE,
                 max_snapshots: int = 5, max_wals: int = 5,
                 count_written: Callable[[int], None] | None = None):
        """`snap_dir`: the snapshot directory (default: `snap` beside `dirpath`).
        `max_snapshots`: snapshot files kept (etcd's --max-snapshots; 0: all). `max_wals`
        (etcd's --max-wals): 0 keeps every WAL segment; otherwise the segments a snapshot
        covers are deleted, so fewer than `max_wals` remain unless the log since the last
        snapshot needs more (etcd never deletes those either). `count_written(n)`: called (on the
        thread that saves) with the bytes of every WAL write (etcd_disk_wal_write_bytes_total)."""
        self.dir = Path(dirpath)
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.snap_dir = Path(snap_dir) if snap_dir else self.dir.parent / "snap"
        self.segment_size = segment_size
        self.max_snapshots = max_snapshots
        self.max_wals = max_wals
        self._count_written = count_written
        self.snapshot: Snapshot | None = None  # the newest durable snapshot, after load()
        self._snapfiles: SnapshotFiles | None = None
        self._wal: WAL | None = None

    def load(self) -> tuple[HardState, list[Entry]]:
        """The last HardState and the entries after the newest durable snapshot (that snapshot,
        one with a WAL marker and its file, is left in `self.snapshot`, or None)."""
        identity = _IDENTITY.pack(self.member_id, self.cluster_id)
        self._snapfiles = SnapshotFiles(self.snap_dir, keep=self.max_snapshots)
        self.snapshot = None
        if not WAL.exists(self.dir):
            self._wal = WAL.create(self.dir, metadata=identity, segment_size=self.segment_size)
            return HardState(), []
        self._wal = WAL.open(self.dir, segment_size=self.segment_size)
        contents = self._wal.read_all()
        if contents.metadata != identity:
            member, cluster = _IDENTITY.unpack(contents.metadata) if len(contents.metadata) == \
                _IDENTITY.size else (0, 0)
            self._wal.close()
            raise BootstrapError(
                f"data dir {self.dir.parent.parent} belongs to member {member:x} of cluster "
                f"{cluster:x}, but --name/--initial-cluster/--initial-cluster-token describe member "
                f"{self.member_id:x} of cluster {self.cluster_id:x}: it is another cluster's data "
                "dir; use a fresh --data-dir")
        if contents.truncated_at is not None:
            path, offset = contents.truncated_at
            log.warning("wal: cut a torn tail left by a crash", extra={"fields": {
                "path": str(path), "offset": offset}})
        if contents.snapshots:
            # The newest snapshot whose file exists (a file is written before its marker, so a
            # marker without a file means the file was lost: refuse rather than guess).
            self.snapshot = self._snapfiles.load_newest((m.index, m.term) for m in contents.snapshots)
            newest = contents.snapshots[-1]
            if self.snapshot is None or self.snapshot.metadata.index != newest.index:
                self._wal.close()
                raise BootstrapError(
                    f"the WAL records snapshot {newest.index} (term {newest.term}) but "
                    f"{self.snap_dir} has no such snapshot file: the data dir is damaged")
            return contents.hard_state, contents.entries_after(newest.index)
        return contents.hard_state, contents.entries

    def save(self, hard_state: HardState | None, entries: list[Entry], sync: bool,
             snapshot: Snapshot | None = None) -> float:
        """Append `entries` and `hard_state`; with `snapshot` (one received from the leader),
        first its file, then its WAL marker, and fsync whatever `sync` says."""
        marker = None
        if snapshot is not None:
            self._snapfiles.save(snapshot)
            marker = SnapshotMarker(snapshot.metadata.index, snapshot.metadata.term)
            self.snapshot = snapshot
            sync = True
        self._save(hard_state, entries, marker)
        if not sync:
            return 0.0
        t0 = time.perf_counter()
        if _FP_FSYNC:
            _FP_FSYNC()
        self._wal.sync()
        return time.perf_counter() - t0

    def compact(self, snapshot: Snapshot) -> int:
        """Record `snapshot` (taken by this member at its applied index; the store must already
        be durable up to it): snapshot file, WAL marker + fsync, then delete the WAL segments it
        covers (unless `max_wals` is 0). Returns the number of segments deleted."""
        self._snapfiles.save(snapshot)
        self._save(None, [], SnapshotMarker(snapshot.metadata.index, snapshot.metadata.term))
        self._wal.sync()
        self.snapshot = snapshot
        return len(self._wal.release_to(snapshot.metadata.index)) if self.max_wals else 0

    def _save(self, hard_state: HardState | None, entries: list[Entry], marker: SnapshotMarker | None) -> None:
        written = self._wal.save(hard_state, entries, snapshot=marker)
        if self._count_written is not None:
            self._count_written(written)

    def received_db_path(self, index: int, term: int) -> Path:
        """Where a store image received from the leader for snapshot (index, term) waits until
        the store installs it."""
        return self.snap_dir / f"{index:016x}-{term:016x}.snap.db"

    def segment_count(self) -> int:
        return len(self._wal.segment_paths()) if self._wal is not None else 0

    def close(self) -> None:
        if self._wal is not None:
            self._wal.close()
            self._wal = None
