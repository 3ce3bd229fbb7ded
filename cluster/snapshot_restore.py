"""`kvcluster snapshot restore|status FILE`: a new member data dir from an `etcdctl snapshot save`
file, as etcdctl 3.4's `snapshot restore` / `snapshot status` (same flags and defaults).

The file is what our Maintenance.Snapshot stream sends, concatenated by etcdctl: a compacted
copy of the member's LMDB store, then the SHA-256 of that copy (32 bytes; etcd appends its hash
the same way, and detects it the same way: file size % 512 == 32). `restore`:

1. refuses an existing --data-dir ("data-dir ... exists", as etcdctl), a --name missing from
   --initial-cluster, a bbolt file (a real etcd's snapshot: only kvcluster's can be restored), a
   file that is no LMDB store, and a hash mismatch (or a missing hash, unless --skip-hash-check);
2. writes the store to `<data-dir>/member/store/data.mdb` (fsynced, renamed into place) and resets
   its applied Raft index to 0, keeping keys, revisions, leases and alarms;
3. leaves no WAL: the member started with the same --name/--initial-cluster/
   --initial-cluster-token bootstraps a fresh log holding the new membership (new member ids and
   cluster id), and serves the data at the snapshot's revision. `--wal-dir` (etcdctl's) names
   where that member will keep its WAL: refused if it exists, as etcdctl; give the member the
   same --wal-dir.

Synchronous, run by the CLI before any event loop exists. Errors raise `SnapshotError` with the
message to print.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import struct
import sys
import tempfile

from cluster.fsutil import fsync_dir
from cluster.mvcc.env import DATA_FILE
from cluster.mvcc.store import MVCCStore
from cluster.server.membership import parse_initial_cluster
from protos.etcdserverpb import rpc_pb2

HASH_SIZE = 32  # sha256, appended by the Snapshot stream
_MAGIC = struct.Struct("<I")
_MAGIC_OFFSET = 16  # both LMDB's and bbolt's first meta page: a 16-byte page header, then the magic
LMDB_MAGIC = 0xBEEFC0DE
BOLT_MAGIC = 0xED0CDAED
_COPY_CHUNK = 1 << 20


class SnapshotError(Exception):
    """A snapshot file or flags that restore/status refuse; str() is the message to print."""


def _store_size(path: str, skip_hash_check: bool) -> int:
    """Bytes of the LMDB copy in `path` (its hash checked and excluded)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(_MAGIC_OFFSET + _MAGIC.size)
        if len(head) < _MAGIC_OFFSET + _MAGIC.size:
            raise SnapshotError(f"snapshot file {path!r} is too short to be a database ({size} bytes)")
        (magic,) = _MAGIC.unpack_from(head, _MAGIC_OFFSET)
        if magic == BOLT_MAGIC:
            raise SnapshotError(
                f"snapshot file {path!r} is an etcd (bbolt) snapshot: kvcluster restores only "
                "snapshots saved from a kvcluster member")
        if magic != LMDB_MAGIC:
            raise SnapshotError(f"snapshot file {path!r} is not a kvcluster snapshot (no LMDB store)")
        has_hash = size % 512 == HASH_SIZE
        if not has_hash:
            if not skip_hash_check:
                raise SnapshotError("snapshot missing hash but --skip-hash-check=false")
            return size
        body = size - HASH_SIZE
        digest = hashlib.sha256()
        f.seek(0)
        left = body
        while left:
            chunk = f.read(min(_COPY_CHUNK, left))
            if not chunk:
                raise SnapshotError(f"snapshot file {path!r} was truncated while reading")
            digest.update(chunk)
            left -= len(chunk)
        stored = f.read(HASH_SIZE)
        if not skip_hash_check and stored != digest.digest():
            raise SnapshotError(f"expected sha256 {stored.hex()}, got {digest.hexdigest()}: the "
                                "snapshot file is corrupt")
        return body


def _copy_prefix(src: str, dest: str, length: int) -> None:
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        left = length
        while left:
            chunk = fin.read(min(_COPY_CHUNK, left))
            if not chunk:
                raise SnapshotError(f"snapshot file {src!r} was truncated while reading")
            fout.write(chunk)
            left -= len(chunk)
        fout.flush()
        os.fsync(fout.fileno())


def restore(snapshot: str, *, data_dir: str, name: str, initial_cluster: str,
            initial_cluster_token: str, initial_advertise_peer_urls: list[str],
            skip_hash_check: bool = False) -> None:
    """Build `data_dir` for member `name` of the new cluster from `snapshot` (module docstring)."""
    if os.path.exists(data_dir):
        raise SnapshotError(f"data-dir {data_dir!r} exists")
    try:
        members = parse_initial_cluster(initial_cluster)
    except ValueError as exc:
        raise SnapshotError(str(exc)) from None
    if name not in members:
        raise SnapshotError(f"couldn't find local name {name!r} in the initial cluster configuration")
    if sorted(members[name]) != sorted(initial_advertise_peer_urls):
        raise SnapshotError(f"--initial-cluster has {name}={','.join(members[name])} but "
                            f"--initial-advertise-peer-urls is {','.join(initial_advertise_peer_urls)}")
    if not initial_cluster_token:
        raise SnapshotError("--initial-cluster-token must not be empty")
    length = _store_size(snapshot, skip_hash_check)
    parent = os.path.dirname(os.path.abspath(data_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".restore-", dir=parent)
    try:
        store_dir = os.path.join(staging, "member", "store")
        os.makedirs(store_dir)
        _copy_prefix(snapshot, os.path.join(store_dir, DATA_FILE), length)
        try:
            store = MVCCStore(store_dir)
        except Exception as exc:
            raise SnapshotError(f"snapshot file {snapshot!r} is corrupt: {exc}") from None
        try:
            with store.begin() as batch:
                batch.commit(0)  # a fresh log replays nothing into it: only the new membership
        finally:
            store.close()
        fsync_dir(store_dir)
        os.rename(staging, data_dir)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def status(snapshot: str) -> tuple[int, int, int, int]:
    """(hash, revision, total keys, total size) of `snapshot`, as etcdctl's `snapshot status`
    (hash: our store Hash; total keys: live keys)."""
    length = _store_size(snapshot, skip_hash_check=True)
    with tempfile.TemporaryDirectory() as tmp:
        _copy_prefix(snapshot, os.path.join(tmp, DATA_FILE), length)
        with MVCCStore(tmp) as store:
            keys = store.range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0", count_only=True)).count
            return store.hash(), store.current_revision, keys, length


def _human_bytes(n: int) -> str:
    """go-humanize's Bytes (SI units), as etcdctl prints sizes."""
    if n < 10:
        return f"{n} B"
    units = ["B", "kB", "MB", "GB", "TB"]
    exp = 0
    value = float(n)
    while value >= 1000 and exp < len(units) - 1:
        value /= 1000
        exp += 1
    return f"{value:.0f} {units[exp]}" if value >= 10 else f"{value:.1f} {units[exp]}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvcluster snapshot", description="Restore or inspect a snapshot.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("restore", help="build a new member data dir from a snapshot file")
    r.add_argument("file")
    r.add_argument("--data-dir", default=None, help="default: ${name}.etcd")
    r.add_argument("--wal-dir", default="", help="the WAL directory the restored member will use "
                   "(start it with the same --wal-dir); must not exist")
    r.add_argument("--name", default="default")
    r.add_argument("--initial-cluster", default="default=http://localhost:2380")
    r.add_argument("--initial-cluster-token", default="etcd-cluster")
    r.add_argument("--initial-advertise-peer-urls", default="http://localhost:2380")
    r.add_argument("--skip-hash-check", action="store_true")
    s = sub.add_parser("status", help="hash, revision, keys and size of a snapshot file")
    s.add_argument("file")
    s.add_argument("-w", "--write-out", choices=["simple", "json"], default="simple")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "restore":
            if args.wal_dir and os.path.exists(args.wal_dir):
                raise SnapshotError(f"wal-dir {args.wal_dir!r} exists")
            restore(args.file, data_dir=args.data_dir or f"{args.name}.etcd", name=args.name,
                    initial_cluster=args.initial_cluster,
                    initial_cluster_token=args.initial_cluster_token,
                    initial_advertise_peer_urls=[u.strip() for u in args.initial_advertise_peer_urls.split(",")
                                                 if u.strip()],
                    skip_hash_check=args.skip_hash_check)
            return 0
        h, rev, keys, size = status(args.file)
        if args.write_out == "json":
            print(f'{{"hash":{h},"revision":{rev},"totalKey":{keys},"totalSize":{size}}}')
        else:
            print(f"{h:x}, {rev}, {keys}, {_human_bytes(size)}")
        return 0
    except SnapshotError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
