"""Restart benchmark for cluster/mvcc: time from open to the first Range answered.

    python -m bench.mvcc_restart [--keys 1000000] [--batch 10000] [--dir DIR] [--keep]

Loads `--keys` keys (16-byte keys, 100-byte values) through WriteBatch.put in batches of
`--batch`, closes the store, then starts a fresh Python process that opens the store and answers
one Range; that process reports the time from just before MVCCStore() to the answer, and its own
wall time including interpreter start and imports. This is done twice: with the file's pages
evicted from the page cache first (posix_fadvise DONTNEED on data.mdb only: "cold"), and then as
left by the cold run ("warm"). Prints one JSON object. The requirement is open-to-first-Range
<= 2 s at 1,000,000 keys.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

KEY_FORMAT = b"key-%012d"  # 16 bytes
VALUE = b"v" * 100


def load(path: str, keys: int, batch_size: int) -> dict:
    from cluster.mvcc import MVCCStore
    from protos.etcdserverpb import rpc_pb2

    store = MVCCStore(path)
    started = time.perf_counter()
    applied = 0
    for first in range(0, keys, batch_size):
        with store.begin() as batch:
            for i in range(first, min(first + batch_size, keys)):
                batch.put(rpc_pb2.PutRequest(key=KEY_FORMAT % i, value=VALUE))
            applied += 1
            batch.commit(applied)
    loaded = time.perf_counter() - started
    store.close()
    return {"load_seconds": round(loaded, 2), "puts_per_second": round(keys / loaded), "db_bytes": os.path.getsize(os.path.join(path, "data.mdb"))}


def measure_open(path: str, probe_key: bytes) -> dict:
    """Runs in the fresh process: open, answer one Range, report."""
    started = time.perf_counter()
    from cluster.mvcc import MVCCStore
    from protos.etcdserverpb import rpc_pb2

    imported = time.perf_counter()
    store = MVCCStore(path)
    resp = store.range(rpc_pb2.RangeRequest(key=probe_key))
    answered = time.perf_counter()
    assert len(resp.kvs) == 1 and resp.kvs[0].value == VALUE, resp
    store.close()
    return {"open_to_first_range_seconds": round(answered - imported, 4), "imports_seconds": round(imported - started, 3)}


def evict_from_page_cache(data_file: str) -> None:
    """Drop this file's (clean, synced) pages from the OS page cache; other files are untouched."""
    fd = os.open(data_file, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def restart_in_fresh_process(path: str, probe: int) -> dict:
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "bench.mvcc_restart", "--measure-open", path, "--probe", str(probe)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = {"fresh_process_wall_seconds": round(time.perf_counter() - started, 3)}
    result.update(json.loads(out.stdout))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--dir", help="store directory (default: a fresh temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the store directory")
    parser.add_argument("--measure-open", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--probe", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure_open:
        print(json.dumps(measure_open(args.measure_open, KEY_FORMAT % args.probe)))
        return 0

    path = args.dir or tempfile.mkdtemp(prefix="mvcc-restart-")
    try:
        result = {"keys": args.keys, "batch": args.batch}
        result.update(load(path, args.keys, args.batch))
        probe = args.keys * 3 // 4
        for label in ("cold", "warm"):
            if label == "cold":
                evict_from_page_cache(os.path.join(path, "data.mdb"))
            result[label] = restart_in_fresh_process(path, probe)
        result["requirement_met"] = all(result[x]["open_to_first_range_seconds"] <= 2.0 for x in ("cold", "warm"))
        print(json.dumps(result, indent=2))
        return 0 if result["requirement_met"] else 1
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
