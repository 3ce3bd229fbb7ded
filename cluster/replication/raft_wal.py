"""`MemberWAL`: the member's Raft log on disk (cluster/raft's `WAL`), stamped with its identity.

The WAL's metadata records the member id and the cluster id it was created for, as etcd's WAL
metadata does. Opening a data dir written for another member or another cluster (other
--initial-cluster, --initial-cluster-token or --name) is refused with `BootstrapError`, before
anything is written.

Blocking and single-threaded: the driver calls it from its `wal` worker thread only.
"""

from __future__ import annotations

import logging
import struct
import time
from pathlib import Path

from cluster.raft import Entry, HardState
from cluster.raft.wal import WAL

from .errors import BootstrapError

log = logging.getLogger(__name__)

_IDENTITY = struct.Struct(">QQ")  # member id, cluster id


class MemberWAL:
    """Implements driver.RaftWAL over cluster.raft.wal.WAL in `dirpath`."""

    def __init__(self, dirpath: str, member_id: int, cluster_id: int):
        self.dir = Path(dirpath)
        self.member_id = member_id
        self.cluster_id = cluster_id
        self._wal: WAL | None = None

    def load(self) -> tuple[HardState, list[Entry]]:
        identity = _IDENTITY.pack(self.member_id, self.cluster_id)
        if not WAL.exists(self.dir):
            self._wal = WAL.create(self.dir, metadata=identity)
            return HardState(), []
        self._wal = WAL.open(self.dir)
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
            raise BootstrapError("WAL holds a snapshot marker; snapshot recovery is not supported yet")
        return contents.hard_state, contents.entries

    def save(self, hard_state: HardState | None, entries: list[Entry], sync: bool) -> float:
        self._wal.save(hard_state, entries)
        if not sync:
            return 0.0
        t0 = time.perf_counter()
        self._wal.sync()
        return time.perf_counter() - t0

    def close(self) -> None:
        if self._wal is not None:
            self._wal.close()
            self._wal = None
