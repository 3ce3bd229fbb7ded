"""etcdserverpb.Maintenance: Status, Hash, HashKV, Defragment, Alarm, Snapshot, MoveLeader.

Shapes checked against etcd 3.4.23: Alarm, Defragment and MoveLeader responses carry no header;
Status lists active alarms in `errors` as Go's text form ("memberID:5 alarm:NOSPACE "); HashKV's
header revision is the store's current revision; the Snapshot stream sends the database in
32 KiB chunks with remaining_bytes counting down to 0, then one more message holding the
SHA-256 of everything sent (remaining_bytes 0), which etcdctl appends to the saved file.
Timed as etcd times them (MemberMetrics): Defragment (and etcd_disk_defrag_inflight while it
runs), Snapshot (from the start of the copy to the last message sent), Hash, HashKV.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from cluster.mvcc import errors as store_errors
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from . import errors
from .alarms import AlarmSet
from .errors import EtcdError
from .proposer import Proposer, ResponseHeaders

SNAPSHOT_CHUNK = 32 * 1024


def alarm_text(member_id: int, alarm: int) -> str:
    return f"memberID:{member_id} alarm:{rpc_pb2.AlarmType.Name(alarm)} "


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    """The Maintenance service of one member."""

    def __init__(self, store, log, apply_loop, alarms: AlarmSet, proposer: Proposer,
                 headers: ResponseHeaders, *, version: str, snapshot_dir: str,
                 readers: ThreadPoolExecutor, metrics, request_timeout: float = 7.0):
        self._store = store
        self._metrics = metrics  # MemberMetrics
        self._log = log
        self._apply_loop = apply_loop
        self._alarms = alarms
        self._proposer = proposer
        self._headers = headers
        self._version = version
        self._snapshot_dir = snapshot_dir
        self._readers = readers
        self._request_timeout = request_timeout

    async def _read(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    async def Alarm(self, request: rpc_pb2.AlarmRequest, context):
        if request.action == rpc_pb2.AlarmRequest.GET:
            return rpc_pb2.AlarmResponse(alarms=self._alarms.members())
        try:
            return await self._proposer.propose(alarm=request)
        except EtcdError as exc:
            await errors.abort_with(context, exc)

    async def Status(self, request, context):
        db_size = await self._read(self._store.db_size)
        in_use = await self._read(self._store.db_size_in_use)
        resp = rpc_pb2.StatusResponse(
            version=self._version, dbSize=db_size, dbSizeInUse=in_use, leader=self._log.leader_id,
            raftIndex=self._log.committed_index, raftTerm=self._log.term,
            raftAppliedIndex=self._log.applied_index,
            errors=[alarm_text(m, a) for m, a in self._alarms.active])
        self._headers.fill(resp.header)
        return resp

    async def Defragment(self, request, context):
        await self._apply_loop.run_exclusive(self._timed_defragment)
        return rpc_pb2.DefragmentResponse()

    def _timed_defragment(self) -> None:
        """Apply thread, exclusively (one defragmentation at a time, as etcd's backend lock)."""
        started = time.monotonic()
        self._metrics.defrag_inflight.set(1)
        try:
            self._store.defragment()
        finally:
            self._metrics.defrag_inflight.set(0)
            self._metrics.defrag_duration.observe(time.monotonic() - started)

    async def Hash(self, request, context):
        started = time.monotonic()
        resp = rpc_pb2.HashResponse(hash=await self._read(self._store.hash))
        self._metrics.hash_duration.observe(time.monotonic() - started)
        self._headers.fill(resp.header)
        return resp

    async def HashKV(self, request: rpc_pb2.HashKVRequest, context):
        started = time.monotonic()
        try:
            h, current, compact = await self._read(self._store.hash_kv, request.revision)
        except store_errors.MVCCError as exc:
            await errors.abort_with(context, errors.from_store_error(exc))
        self._metrics.hash_rev_duration.observe(time.monotonic() - started)
        # etcd's store starts with compact revision -1 and reports it as is until a compaction
        resp = rpc_pb2.HashKVResponse(hash=h, compact_revision=compact if compact > 0 else -1)
        self._headers.fill(resp.header, revision=current)
        return resp

    async def Snapshot(self, request, context):
        os.makedirs(self._snapshot_dir, exist_ok=True)
        started = time.monotonic()
        with tempfile.TemporaryFile(dir=self._snapshot_dir) as f:
            total = await self._read(self._store.snapshot, f)
            f.seek(0)
            digest = hashlib.sha256()
            sent = 0
            while sent < total:
                chunk = await self._read(f.read, SNAPSHOT_CHUNK)
                if not chunk:
                    break
                sent += len(chunk)
                digest.update(chunk)
                yield rpc_pb2.SnapshotResponse(remaining_bytes=total - sent, blob=chunk)
        yield rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=digest.digest())
        self._metrics.snapshot_duration.observe(time.monotonic() - started)

    async def MoveLeader(self, request: rpc_pb2.MoveLeaderRequest, context):
        """As etcd: only the leader moves leadership ("not leader"); the target must be a voting
        member ("bad leader transferee"); then the core's leader transfer, awaited until the
        target leads, for at most the request timeout."""
        me = self._headers.member_id
        try:
            if self._log.leader_id != me:
                raise errors.NOT_LEADER
            transfer = getattr(self._log, "transfer_leadership", None)
            if request.targetID == me:
                return rpc_pb2.MoveLeaderResponse()  # already the leader: nothing to do
            if transfer is None or not self._log.is_voter(request.targetID):
                raise errors.BAD_LEADER_TRANSFEREE
            if not await transfer(request.targetID, self._request_timeout):
                raise errors.LEADER_TRANSFER_TIMEOUT
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        return rpc_pb2.MoveLeaderResponse()
