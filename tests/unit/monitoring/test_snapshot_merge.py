"""Merging worker snapshots: sums, info maxima, retirement (files in a temp dir, no processes)."""

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from monitoring.multiprocess import (SnapshotPublisher, WorkerSnapshotCollector, merge, prepare_directory,
                                     snapshot_of)


def worker_registry(reads: int, entries: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("reads", "Reads.", ["kind"], registry=registry).labels("range").inc(reads)
    Gauge("entries", "Entries.", registry=registry).set(entries)
    Histogram("size_bytes", "Sizes.", buckets=(10,), registry=registry).observe(reads)
    Info("build", "Build.", registry=registry).info({"version": "1"})
    return registry


def test_merge_sums_samples_and_takes_max_of_info():
    merged = {f["name"]: f for f in merge([snapshot_of(worker_registry(3, 10)), snapshot_of(worker_registry(20, 5))])}
    values = {(s[0], tuple(sorted(s[1].items()))): s[2] for f in merged.values() for s in f["samples"]}
    assert values[("reads_total", (("kind", "range"),))] == 23
    assert values[("entries", ())] == 15
    assert values[("size_bytes_bucket", (("le", "10.0"),))] == 1
    assert values[("size_bytes_bucket", (("le", "+Inf"),))] == 2
    assert values[("size_bytes_sum", ())] == 23
    assert values[("build_info", (("version", "1"),))] == 1
    assert not any(name.endswith("_created") for name, _ in values)


def test_retired_worker_keeps_cumulative_counts_and_drops_gauges(tmp_path):
    directory = str(tmp_path)
    prepare_directory(directory)
    SnapshotPublisher(directory, worker_registry(3, 10), worker_id="a").publish()
    SnapshotPublisher(directory, worker_registry(4, 7), worker_id="b").publish()
    collector = WorkerSnapshotCollector(directory)
    collector.retire("a")
    SnapshotPublisher(directory, worker_registry(1, 2), worker_id="c").publish()  # a's replacement
    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value("reads_total", {"kind": "range"}) == 8
    assert registry.get_sample_value("size_bytes_count") == 3
    assert registry.get_sample_value("entries") == 9
    assert b"# TYPE reads_total counter" in generate_latest(registry)


def test_prepare_directory_forgets_a_previous_run(tmp_path):
    directory = str(tmp_path)
    SnapshotPublisher(directory, worker_registry(3, 10), worker_id="old").publish()
    prepare_directory(directory)
    registry = CollectorRegistry()
    registry.register(WorkerSnapshotCollector(directory))
    assert registry.get_sample_value("entries") is None


def test_publisher_publishes_every_interval_and_on_stop(tmp_path):
    directory = str(tmp_path)
    registry = CollectorRegistry()
    reads = Counter("reads", "Reads.", registry=registry)
    merged = CollectorRegistry()
    merged.register(WorkerSnapshotCollector(directory))

    async def scenario():
        publisher = SnapshotPublisher(directory, registry, interval=0.02, worker_id="w")
        await publisher.start()
        reads.inc(2)
        deadline = time.monotonic() + 10
        while merged.get_sample_value("reads_total") != 2:
            assert time.monotonic() < deadline, "no periodic snapshot"
            await asyncio.sleep(0.01)
        reads.inc()
        await publisher.stop()

    asyncio.run(scenario())
    assert merged.get_sample_value("reads_total") == 3
