"""`AutoCompactor`: etcd's --auto-compaction-mode / --auto-compaction-retention.

- revision mode (retention N): every 5 minutes, compact at current revision - N (etcd's
  revision compactor).
- periodic mode (retention a duration, bare numbers meaning hours): sample the current revision
  every retention/10 (at most every hour, as etcd 3.4), and compact at the newest sample that is
  at least `retention` old, so history younger than the retention is kept.
Compactions are ordinary proposals; errors (already compacted, ...) are logged and ignored.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from typing import Awaitable, Callable

from cluster.etcd_flags import parse_duration
from protos.etcdserverpb import rpc_pb2

from .errors import EtcdError

log = logging.getLogger(__name__)

REVISION_MODE_INTERVAL = 300.0


def parse_retention(mode: str, value: str) -> float:
    """Retention as a number: revisions (revision mode) or seconds (periodic). 0 = disabled."""
    value = (value or "0").strip()
    if mode == "revision":
        return float(int(value))
    if re.fullmatch(r"\d+", value):
        return float(value) * 3600.0
    return parse_duration(value)


class AutoCompactor:
    """Proposes compactions on a schedule; `start()`/`stop()` on the event loop."""

    def __init__(self, mode: str, retention: float, current_revision: Callable[[], int],
                 compact: Callable[[rpc_pb2.CompactionRequest], Awaitable[object]]):
        self.mode = mode
        self.retention = retention
        self._current_revision = current_revision
        self._compact = compact
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.retention > 0:
            self._task = asyncio.create_task(self._run(), name="auto-compactor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        if self.mode == "revision":
            while True:
                await asyncio.sleep(REVISION_MODE_INTERVAL)
                await self._compact_at(self._current_revision() - int(self.retention))
        interval = min(self.retention / 10, 3600.0)
        samples: collections.deque[tuple[float, int]] = collections.deque()
        while True:
            samples.append((time.monotonic(), self._current_revision()))
            await asyncio.sleep(interval)
            now = time.monotonic()
            target = 0
            while samples and now - samples[0][0] >= self.retention:
                target = samples.popleft()[1]
            if target:
                await self._compact_at(target)

    async def _compact_at(self, revision: int) -> None:
        if revision <= 0:
            return
        try:
            await self._compact(rpc_pb2.CompactionRequest(revision=revision))
            log.info("auto compaction", extra={"fields": {"revision": revision, "mode": self.mode}})
        except EtcdError as exc:
            log.info("auto compaction skipped", extra={"fields": {"revision": revision, "error": exc.message}})
