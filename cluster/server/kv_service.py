"""etcdserverpb.KV: Range, Put, DeleteRange, Txn, Compact.

Reads: serializable ranges read the store directly; linearizable ones first pass the log's read
barrier. A single-key range runs inline on the event loop (one short LMDB read); a range over
[key, range_end) runs on a reader thread. Writes are validated (validation.py), admitted by the
quota and proposed through the seam; the response is the applied outcome with its header filled.
Read-only txns are not proposed: after the read barrier (unless every op is a serializable
range) they run on the apply thread between two batches (ApplyLoop.read_only_txn).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import grpc

from cluster.mvcc import errors as store_errors
from protos.etcdserverpb import rpc_pb2, rpc_pb2_grpc

from . import errors, validation
from .auth import gate
from .errors import EtcdError
from .metrics import MemberMetrics
from .proposer import Proposer, ResponseHeaders
from .quota import BackendQuota


class KVService(rpc_pb2_grpc.KVServicer):
    """The KV service over the propose -> apply seam."""

    def __init__(self, store, log, proposer: Proposer, headers: ResponseHeaders, quota: BackendQuota,
                 apply_loop, metrics: MemberMetrics, *, max_txn_ops: int, readers: ThreadPoolExecutor):
        self._store = store
        self._log = log
        self._proposer = proposer
        self._headers = headers
        self._quota = quota
        self._apply_loop = apply_loop
        self._metrics = metrics
        self._max_txn_ops = max_txn_ops
        self._readers = readers

    async def Range(self, request: rpc_pb2.RangeRequest, context: grpc.aio.ServicerContext):
        try:
            validation.check_range(request)
            gate.check_range(request.key, request.range_end)
            if not request.serializable:
                await self._log.read_barrier()
            if request.range_end:
                resp = await asyncio.get_running_loop().run_in_executor(
                    self._readers, self._store.range, request)
            else:
                resp = self._store.range(request)
        except store_errors.MVCCError as exc:
            await errors.abort_with(context, errors.from_store_error(exc))
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        self._metrics.range_total.inc()
        self._headers.fill(resp.header)
        return resp

    async def Put(self, request: rpc_pb2.PutRequest, context: grpc.aio.ServicerContext):
        try:
            validation.check_put(request)
            if self._quota.check("put", request):
                await self._quota.refuse()
            resp = await self._proposer.propose(put=request)
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        self._headers.fill(resp.header)
        return resp

    async def DeleteRange(self, request: rpc_pb2.DeleteRangeRequest, context: grpc.aio.ServicerContext):
        try:
            validation.check_delete(request)
            resp = await self._proposer.propose(delete_range=request)
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        self._headers.fill(resp.header)
        return resp

    async def Txn(self, request: rpc_pb2.TxnRequest, context: grpc.aio.ServicerContext):
        try:
            validation.check_txn(request, self._max_txn_ops)
            if validation.is_txn_read_only(request):
                gate.check_txn_reads(request)
                if not validation.is_txn_serializable(request):
                    await self._log.read_barrier()
                resp = await self._apply_loop.read_only_txn(request)
            else:
                if self._quota.check("txn", request):
                    await self._quota.refuse()
                resp = await self._proposer.propose(txn=request)
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        self._headers.fill(resp.header)
        return resp

    async def Compact(self, request: rpc_pb2.CompactionRequest, context: grpc.aio.ServicerContext):
        try:
            resp = await self._proposer.propose(compaction=request)
            if request.physical:
                await self._apply_loop.wait_compaction()
        except EtcdError as exc:
            await errors.abort_with(context, exc)
        self._headers.fill(resp.header)
        return resp
