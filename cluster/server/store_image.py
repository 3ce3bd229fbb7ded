"""`MemberStoreImage`: the member's MVCC store as Raft snapshots see it (seam.StoreImage).

The store is its own snapshot: compaction makes it durable (`sync`), a leader sends a consistent
copy of its database (`write_image`), and a follower that fell behind the leader's compacted log
swaps its database for that copy (`install_image`), then rebuilds what it derives from the store:
the lessor's leases, the alarms (kept in the store as a server record), the membership and the
auth state (the image carries both), and the watch hub's position (every watcher catches up again from the new
store's history, or is cancelled as compacted).
"""

from __future__ import annotations

import asyncio
import os


class MemberStoreImage:
    """seam.StoreImage over a `Member` (bound late: the member builds its log first)."""

    def __init__(self, member, scratch_dir: str):
        self._member = member
        self.scratch_dir = scratch_dir
        os.makedirs(scratch_dir, exist_ok=True)

    def sync(self) -> None:
        self._member.store.sync()

    def write_image(self, dest) -> int:
        return self._member.store.snapshot(dest)

    async def install_image(self, path: str) -> int:
        m = self._member
        store = m.store
        await m.apply_loop.run_exclusive(store.replace_with, path)
        leases = await asyncio.get_running_loop().run_in_executor(None, store.leases)
        m.lessor.reset(leases)
        await asyncio.get_running_loop().run_in_executor(None, m.alarms.reload)
        m.auth.load(await asyncio.get_running_loop().run_in_executor(None, store.auth_records))
        await m.reload_membership()
        hub = getattr(m, "hub", None)
        if hub is not None:
            hub.resync_all()
        m.apply_loop.resume_compaction()
        return store.applied_index
