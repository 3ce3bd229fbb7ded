"""One metrics endpoint for several worker processes: workers publish snapshots, the parent merges.

The proxy runs N workers behind one port (SO_REUSEPORT) and one metrics endpoint in the parent.
The contract, in full:

- Directory: the parent owns `directory`. It calls `prepare_directory()` before starting any
  worker (this removes snapshots of a previous run), and no one else writes there.
- Workers write: each worker runs a `SnapshotPublisher` over the registry it records into (its
  GrpcServerMetrics and any prometheus_client Counter/Gauge/Histogram/Summary). Every
  `interval` seconds (default 1), and once more on `stop()`, it replaces
  `worker-<id>.json` atomically (write to a temporary name, then rename). Families named
  `process_*` and `python_*` are not published: they describe one process, and the parent
  exposes its own.
- The parent reads: `WorkerSnapshotCollector` (a prometheus_client collector) reads every
  snapshot at scrape time and merges samples with the same name and labels by summing them.
  That is right for counters, histograms and summaries, and for gauges that are additive across
  workers (cache entries, open streams: the totals of the proxy). Info metrics take the maximum.
  A gauge that is not additive must carry a label that tells workers apart. `_created` samples
  are dropped (they are timestamps).
- Staleness: a scrape sees each live worker's counts as of at most `interval` seconds ago (plus
  the time to write a file). For up-to-date scrapes the parent awaits `refresh(pids)` before
  collecting (`MetricsHTTPServer(before_scrape=...)`): it sends SIGUSR1 to those workers, which
  publish at once, and waits (bounded) for their new files. This needs worker ids = pids (the
  default). A worker killed without `stop()` loses at most the counts of its last interval.
- Exits: when the parent has reaped a worker it calls `retire(worker_id)`. The worker's counters,
  histograms and summaries are folded into `retired.json` so totals never go backwards (Prometheus
  would read a drop as a counter reset); its gauges vanish with it.

The parent exposes a registry of its own, built by `parent_registry()`: its process_*/python_*
collectors plus the merged workers. It must not register in it metrics that workers publish
(the exposition would hold the same name twice).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from typing import Iterable

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, CollectorRegistry

PER_PROCESS_PREFIXES = ("process_", "python_")
REFRESH_SIGNAL = signal.SIGUSR1
_WORKER_FILE = re.compile(r"^worker-([A-Za-z0-9_.-]+)\.json$")
_RETIRED_FILE = "retired.json"
_CUMULATIVE_TYPES = ("counter", "histogram", "summary")

# A snapshot: a list of families, each {"name", "type", "help", "unit", "samples"}, where samples
# are [sample name, {label: value}, value].
Snapshot = list[dict]


def snapshot_of(registry: CollectorRegistry) -> Snapshot:
    """The current samples of `registry`, minus per-process families and `_created` samples."""
    families = []
    for family in registry.collect():
        if family.name.startswith(PER_PROCESS_PREFIXES):
            continue
        samples = [[s.name, s.labels, s.value] for s in family.samples if not s.name.endswith("_created")]
        families.append({"name": family.name, "type": family.type, "help": family.documentation,
                         "unit": family.unit, "samples": samples})
    return families


def merge(snapshots: Iterable[Snapshot], types: Iterable[str] | None = None) -> Snapshot:
    """Sum samples with the same name and labels across snapshots (info metrics: max).

    A family's type and help come from the first snapshot that has it. With `types`, only
    families of those types are kept.
    """
    keep = None if types is None else set(types)
    merged: dict[str, dict] = {}
    values: dict[str, dict[tuple, list]] = {}
    for snapshot in snapshots:
        for family in snapshot:
            if keep is not None and family["type"] not in keep:
                continue
            name = family["name"]
            if name not in merged:
                merged[name] = {k: family[k] for k in ("name", "type", "help", "unit")}
                values[name] = {}
            combine = max if merged[name]["type"] == "info" else float.__add__
            family_values = values[name]
            for sample_name, labels, value in family["samples"]:
                key = (sample_name, tuple(sorted(labels.items())))
                if key in family_values:
                    entry = family_values[key]
                    entry[2] = combine(float(entry[2]), float(value))
                else:
                    family_values[key] = [sample_name, labels, value]
    for name, family in merged.items():
        family["samples"] = list(values[name].values())
    return list(merged.values())


def _read(path: str) -> Snapshot:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())["families"]
    except FileNotFoundError:
        return []


def _write_atomically(path: str, families: Snapshot) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as f:
        f.write(json.dumps({"pid": os.getpid(), "families": families}).encode())
    os.replace(temporary, path)


def prepare_directory(directory: str) -> None:
    """Parent, before starting workers: create `directory` and remove any earlier snapshots."""
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if _WORKER_FILE.match(name) or name == _RETIRED_FILE or name.endswith(".tmp"):
            os.unlink(os.path.join(directory, name))


class SnapshotPublisher:
    """Worker side: publishes `registry` to `<directory>/worker-<worker_id>.json`.

    `worker_id` defaults to the process id; the parent passes the same id to `retire()`.
    `publish()` may be called at any time (it is synchronous and cheap: one small file);
    `start()` publishes every `interval` seconds, and whenever SIGUSR1 arrives, until `stop()`,
    which publishes a last time and ignores SIGUSR1 from then on.
    """

    def __init__(self, directory: str, registry: CollectorRegistry | None = None,
                 interval: float = 1.0, worker_id: str | int | None = None):
        self.worker_id = str(os.getpid() if worker_id is None else worker_id)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.worker_id):
            raise ValueError(f"worker id must be a file-name-safe token, got {self.worker_id!r}")
        self.path = os.path.join(directory, f"worker-{self.worker_id}.json")
        self._registry = REGISTRY if registry is None else registry
        self._interval = interval
        self._task: asyncio.Task | None = None

    def publish(self) -> None:
        _write_atomically(self.path, snapshot_of(self._registry))

    async def start(self) -> None:
        # The handler is in place before the first file exists: the parent signals only workers
        # that have a file, and SIGUSR1's default action would end the process.
        asyncio.get_running_loop().add_signal_handler(REFRESH_SIGNAL, self.publish)
        self.publish()
        self._task = asyncio.create_task(self._publish_periodically())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            asyncio.get_running_loop().remove_signal_handler(REFRESH_SIGNAL)
            signal.signal(REFRESH_SIGNAL, signal.SIG_IGN)
        self.publish()

    async def _publish_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            # Collect on the loop (where the counts change); write the file off it.
            families = snapshot_of(self._registry)
            await asyncio.to_thread(_write_atomically, self.path, families)


class WorkerSnapshotCollector:
    """Parent side: a prometheus_client collector exposing the sum of the workers' snapshots."""

    def __init__(self, directory: str):
        self._directory = directory

    def collect(self):
        return [_as_metric(family) for family in merge(self._snapshots())]

    async def refresh(self, pids: Iterable[int], timeout: float = 0.5) -> None:
        """Ask the workers `pids` (worker id = pid) for a snapshot now; return once each has
        written one, or after `timeout` seconds. Workers without a file yet are not asked."""
        pending = {}
        for pid in pids:
            path = os.path.join(self._directory, f"worker-{pid}.json")
            try:
                inode = os.stat(path).st_ino  # every publish renames a new file (a new inode) here
                os.kill(pid, REFRESH_SIGNAL)
            except (FileNotFoundError, ProcessLookupError):
                continue
            pending[path] = inode
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            for path, inode in list(pending.items()):
                try:
                    if os.stat(path).st_ino != inode:
                        del pending[path]
                except FileNotFoundError:
                    del pending[path]

    def retire(self, worker_id: str | int) -> None:
        """Worker `worker_id` has exited: keep its cumulative counts, drop its gauges."""
        worker_path = os.path.join(self._directory, f"worker-{worker_id}.json")
        retired_path = os.path.join(self._directory, _RETIRED_FILE)
        folded = merge([_read(retired_path), _read(worker_path)], types=_CUMULATIVE_TYPES)
        _write_atomically(retired_path, folded)
        os.unlink(worker_path)

    def _snapshots(self) -> list[Snapshot]:
        names = sorted(n for n in os.listdir(self._directory) if _WORKER_FILE.match(n) or n == _RETIRED_FILE)
        return [_read(os.path.join(self._directory, n)) for n in names]


def _as_metric(family: dict) -> Metric:
    metric = Metric(family["name"], family["help"], family["type"], family["unit"])
    for sample_name, labels, value in family["samples"]:
        metric.add_sample(sample_name, labels, value)
    return metric


def parent_registry(workers: WorkerSnapshotCollector) -> CollectorRegistry:
    """A registry for the parent's metrics endpoint: its own process_*/python_* + the workers'."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(workers)
    return registry
