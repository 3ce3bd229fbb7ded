"""`ApplyLoop`: applies committed log entries to the store and answers their proposers.

This is the seam's apply callback. For each batch handed over by the log:
1. On the apply thread (one dedicated worker thread, the store's only writer): decode each
   `kvpb.InternalRequest`, run it against ONE `WriteBatch`, collect a response or an `EtcdError`
   per entry, and commit the batch with the index of its last entry (exactly-once on replay).
2. Back on the event loop: update the lessor (grants/revokes), feed the watch hub the committed
   changes, report applied membership changes (`on_member_change`), then resolve the
   proposers' futures in `RequestWait`.
Membership (membership.py) changes on the apply thread, and the batch that changed it also
writes it to the store (`put_server_meta`), atomically with the applied index.
Nothing here validates requests; that happened before proposing (validation.py). What depends on
state is decided here, identically on every member: NOSPACE gating, lease existence, revisions,
auth (auth/store.py applies auth entries and checks each write's permission from its header).
A full LMDB map never half-applies a batch nor stops the member: the batch is applied again in a
grown map (the same entries as on every other member) and `on_no_space` raises NOSPACE. So does
a write that takes this member's store to the quota (applied, but answered NO_SPACE, as etcd).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from cluster.mvcc import errors as store_errors
from protos.etcdserverpb import rpc_pb2
from protos.kvpb import internal_pb2

from . import errors
from .alarms import AlarmSet
from .lessor import Lessor
from .membership import STORE_META_KEY
from .quota import request_cost
from .request_wait import RequestWait
from .seam import Entry

log = logging.getLogger(__name__)


def txn_has_put(r: rpc_pb2.TxnRequest) -> bool:
    """Whether any branch (nested included) puts: such a txn is refused under NOSPACE, as etcd."""
    for op in (*r.success, *r.failure):
        kind = op.WhichOneof("request")
        if kind == "request_put" or (kind == "request_txn" and txn_has_put(op.request_txn)):
            return True
    return False


@dataclass
class BatchOutcome:
    """What one applied batch produced, handed from the apply thread back to the loop."""

    results: list[tuple[int, object]] = field(default_factory=list)   # (request id, response|EtcdError)
    changes: list = field(default_factory=list)                        # store.commit() output
    # lease grants (id, ttl) and revokes (id, None), in apply order, for the lessor
    lease_changes: list[tuple[int, int | None]] = field(default_factory=list)
    revision: int = 0                                                  # store revision after commit
    member_changes: list = field(default_factory=list)                 # applied MemberChanges
    store_full: bool = False          # the LMDB map filled up: the member raises NOSPACE
    over_quota: bool = False          # a write took the store to --quota-backend-bytes: likewise
    over_quota_ids: set = field(default_factory=set)  # their request ids (answered NO_SPACE)
    start_size: int = 0               # the store's size when the batch began (quota checks)


class ApplyLoop:
    """The apply side of the member. `apply(entries)` is the seam's ApplyCallback."""

    def __init__(self, store, lessor: Lessor, alarms: AlarmSet, wait: RequestWait,
                 notify_watchers: Callable[[list, int], None], *, membership=None,
                 on_member_change: Callable[[list], None] | None = None,
                 observe_commit: Callable[[float], None] | None = None,
                 count_ops: Callable[[internal_pb2.InternalRequest], None] | None = None,
                 auth=None, quota_bytes: int = 0,
                 on_no_space: Callable[[], asyncio.Future | None] | None = None,
                 warning_apply_duration: float = 0.1,
                 count_slow_apply: Callable[[], None] | None = None):
        self.store = store
        self.lessor = lessor
        self.alarms = alarms
        self.wait = wait
        self._notify_watchers = notify_watchers
        self.membership = membership  # membership.Membership (None: no membership records)
        self.membership_dirty = False  # True: write the membership with the next batch
        self._on_member_change = on_member_change
        self._observe_commit = observe_commit
        self._count_ops = count_ops
        self.auth = auth  # auth.store.AuthStore: auth entries, and permission checks of writes
        self.quota_bytes = quota_bytes  # --quota-backend-bytes resolved; 0: no quota
        # event loop: propose this member's NOSPACE alarm; returns the proposal's future, or
        # None when a NOSPACE alarm is already active
        self._on_no_space = on_no_space
        # etcd's --experimental-warning-apply-duration: an entry whose apply (on the apply
        # thread, the batch's commit not included) takes longer is logged and counted
        self._warning_apply_duration = warning_apply_duration
        self._count_slow_apply = count_slow_apply
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apply")
        self._compaction_task: asyncio.Task | None = None
        self._compaction_waiters: list[asyncio.Future] = []

    async def apply(self, entries: list[Entry]) -> None:
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(self.thread, self._apply_batch, entries)
        for lease_id, ttl in outcome.lease_changes:
            if ttl is None:
                self.lessor.on_revoked(lease_id)
            else:
                self.lessor.on_granted(lease_id, ttl)
        alarm = None
        if (outcome.store_full or outcome.over_quota) and self._on_no_space is not None:
            alarm = self._on_no_space()
        if outcome.changes:
            self._notify_watchers(outcome.changes, outcome.revision)
        self.resume_compaction()
        if outcome.member_changes and self._on_member_change is not None:
            self._on_member_change(outcome.member_changes)
        for request_id, result in outcome.results:
            if alarm is not None and request_id in outcome.over_quota_ids:
                # as etcd: the writer hears NO_SPACE once the alarm is raised (and listed)
                alarm.add_done_callback(lambda _t, rid=request_id, res=result: self.wait.trigger(rid, res))
            else:
                self.wait.trigger(request_id, result)

    def resume_compaction(self) -> None:
        """If the store has physical compaction left, run its chunks on the apply thread,
        interleaved with batches (each chunk is one short write transaction)."""
        if self.store.compaction_pending and self._compaction_task is None:
            self._compaction_task = asyncio.create_task(self._finish_compaction(), name="compaction")

    async def wait_compaction(self) -> None:
        """Return once no physical compaction is pending (Compact with physical=true)."""
        while self.store.compaction_pending:
            fut = asyncio.get_running_loop().create_future()
            self._compaction_waiters.append(fut)
            self.resume_compaction()
            await fut

    async def _finish_compaction(self) -> None:
        try:
            while await self.run_exclusive(self._continue_compaction):
                await asyncio.sleep(0)
        finally:
            self._compaction_task = None
            waiters, self._compaction_waiters = self._compaction_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def _continue_compaction(self) -> bool:
        """Apply thread: one compaction chunk; a full map is grown and the chunk retried."""
        try:
            return self.store.continue_compaction()
        except store_errors.StoreFullError:
            self.store.grow_map()
            return True

    async def run_exclusive(self, fn, *args):
        """Run `fn(*args)` on the apply thread, between batches (e.g. store.defragment)."""
        return await asyncio.get_running_loop().run_in_executor(self.thread, fn, *args)

    async def read_only_txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """Evaluate a txn that writes nothing on the apply thread, between batches, in a batch
        that is then aborted: it sees exactly the state after the last applied batch, and
        needs no log entry (etcd also serves read-only txns without Raft)."""
        def run():
            batch = self.store.begin()
            try:
                return batch.txn(req)
            finally:
                batch.abort()
        try:
            return await self.run_exclusive(run)
        except store_errors.MVCCError as exc:
            raise errors.from_store_error(exc) from None

    async def close(self) -> None:
        if self._compaction_task is not None:
            self._compaction_task.cancel()
            try:
                await self._compaction_task
            except (asyncio.CancelledError, Exception):
                pass
        self.thread.shutdown(wait=True)

    # -- apply thread ----------------------------------------------------------------------------

    def _apply_batch(self, entries: list[Entry]) -> BatchOutcome:
        """Apply `entries` as one store batch. A full LMDB map (StoreFullError) aborts the batch
        whole; the map is then grown (doubled until the batch fits) and the same entries applied
        again, so this member ends in the same state as every other one, and the outcome asks for
        the NOSPACE alarm."""
        grown_from = 0
        # what the entries may change in memory besides the store (both copy-on-write), so that
        # an aborted attempt leaves no trace: the retry applies the same entries to the same state
        auth_state = self.auth.state if self.auth is not None else None
        membership = copy.copy(self.membership)
        while True:
            try:
                outcome = self._apply_batch_once(entries)
                break
            except store_errors.StoreFullError as exc:
                grown_from = grown_from or exc.map_size
                if self.auth is not None:
                    self.auth.state = auth_state
                if membership is not None:
                    self.membership.reload(membership)
                self.store.grow_map()  # doubles: a batch is bounded, so this ends
        if grown_from:
            log.error("store map full; applied the batch again in a grown map, raising NOSPACE",
                      extra={"fields": {"map_size": grown_from, "new_map_size": self.store.map_size,
                                        "first_index": entries[0].index}})
            outcome.store_full = True
        return outcome

    def _apply_batch_once(self, entries: list[Entry]) -> BatchOutcome:
        outcome = BatchOutcome(start_size=self.store.db_size() if self.quota_bytes > 0 else 0)
        batch = self.store.begin()
        try:
            for entry in entries:
                if not entry.data:  # a new term's empty entry: only its index is recorded
                    continue
                try:
                    req = internal_pb2.InternalRequest.FromString(entry.data)
                except Exception:  # not ours to judge further: skip, but keep the index moving
                    log.error("undecodable log entry", extra={"fields": {"index": entry.index}})
                    continue
                started = time.monotonic()
                try:
                    if self.auth is not None and self.auth.handles(req):
                        result = self.auth.apply(batch, req, entry.index)
                    else:
                        result = self._apply_one(batch, req, outcome)
                except store_errors.StoreFullError:
                    raise  # the batch is aborted whole
                except store_errors.MVCCError as exc:
                    result = errors.from_store_error(exc)
                except errors.EtcdError as exc:
                    result = exc
                if self._count_ops is not None and not isinstance(result, errors.EtcdError):
                    self._count_ops(req)
                took = time.monotonic() - started
                if took > self._warning_apply_duration:
                    self._slow_apply(req, took, entry.index)
                outcome.results.append((req.id, result))
            if self.membership_dirty and self.membership is not None:
                batch.put_server_meta(STORE_META_KEY, self.membership.encode())
            t0 = time.perf_counter()
            outcome.changes = batch.commit(entries[-1].index)
            self.membership_dirty = False
            if self._observe_commit is not None:
                self._observe_commit(time.perf_counter() - t0)
        except BaseException:
            batch.abort()
            self.alarms.discard_staged()
            raise
        self.alarms.commit_staged()
        outcome.revision = self.store.current_revision
        return outcome

    def _slow_apply(self, req: internal_pb2.InternalRequest, took: float, index: int) -> None:
        """Apply thread. etcd's "apply request took too long" (values not logged)."""
        log.warning("apply request took too long", extra={"fields": {
            "took": f"{took * 1000:.3f}ms", "expected-duration": f"{self._warning_apply_duration * 1000:g}ms",
            "request": req.WhichOneof("request"), "request_id": req.id, "index": index}})
        if self._count_slow_apply is not None:
            self._count_slow_apply()

    def _quota_checked(self, outcome: BatchOutcome, request_id: int, kind: str, req, resp):
        """etcd's quotaApplierV3: a write that grows the store is applied, but answered with
        NO_SPACE if it would take this member's store (size at the batch's start) to the quota;
        the member then raises NOSPACE for itself (unless one is active), as etcd's apply does."""
        cost = request_cost(kind, req)
        if self.quota_bytes > 0 and cost > 0 and outcome.start_size + cost >= self.quota_bytes:
            outcome.over_quota = True
            outcome.over_quota_ids.add(request_id)
            return errors.NO_SPACE
        return resp

    def _apply_one(self, batch, req: internal_pb2.InternalRequest, outcome: BatchOutcome):
        kind = req.WhichOneof("request")
        if self.auth is not None:
            self.auth.check_write(batch, req)  # the caller's permission, from the entry's header
        if kind == "put":
            if self.alarms.no_space_staged():
                raise errors.NO_SPACE
            return self._quota_checked(outcome, req.id, "put", req.put, batch.put(req.put))
        if kind == "delete_range":
            return batch.delete_range(req.delete_range)
        if kind == "txn":
            if self.alarms.no_space_staged() and txn_has_put(req.txn):
                raise errors.NO_SPACE
            return self._quota_checked(outcome, req.id, "txn", req.txn, batch.txn(req.txn))
        if kind == "compaction":
            batch.compact(req.compaction.revision)
            return rpc_pb2.CompactionResponse()
        if kind == "lease_grant":
            if self.alarms.no_space_staged():
                raise errors.NO_SPACE
            lease_id = req.lease_grant.ID
            ttl = self.lessor.effective_ttl(req.lease_grant.TTL)
            batch.lease_grant(lease_id, ttl)  # LeaseExistsError -> "lease already exists"
            outcome.lease_changes.append((lease_id, ttl))
            return self._quota_checked(outcome, req.id, "lease_grant", req.lease_grant,
                                       rpc_pb2.LeaseGrantResponse(ID=lease_id, TTL=ttl))
        if kind == "lease_revoke":
            batch.lease_revoke(req.lease_revoke.ID)
            outcome.lease_changes.append((req.lease_revoke.ID, None))
            return rpc_pb2.LeaseRevokeResponse()
        if kind == "lease_checkpoint":
            for cp in req.lease_checkpoint.checkpoints:
                batch.lease_checkpoint(cp.ID, cp.remaining_TTL)
            return rpc_pb2.LeaseCheckpointResponse()
        if kind == "alarm":
            return self.alarms.apply(batch, req.alarm)
        if kind == "member_attributes":
            attrs = req.member_attributes
            if self.membership is not None and self.membership.apply_published(
                    attrs.member_id, attrs.name, list(attrs.client_urls)):
                self.membership_dirty = True
            return attrs
        if kind == "member_change":
            if self.membership is not None and self.membership.apply_change(req.member_change):
                self.membership_dirty = True
                outcome.member_changes.append(req.member_change)
            return req.member_change
        log.error("unsupported request in log", extra={"fields": {"kind": kind, "id": req.id}})
        return errors.NOT_CAPABLE
