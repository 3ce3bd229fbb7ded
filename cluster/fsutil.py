"""Small durability helpers shared by the WAL, snapshots, the peer service and restore."""

from __future__ import annotations

import os


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory, so that entries created, renamed or removed in it survive a crash.
    Blocking: call it off the event loop."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
