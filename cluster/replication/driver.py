"""`RaftDriver`: the asyncio loop that runs the Raft core for one member (seam.ReplicatedLog).

Tasks (all on the member's event loop; blocking I/O on the driver's `wal` worker thread):

- **ticker**: every `tick_interval` seconds, `RawNode.tick()` (elections, heartbeats).
- **ready loop**: whenever something happened (tick, peer message, proposal, read request,
  transport report), drain `RawNode.ready()`; before each Ready, issue the pending ReadIndex
  round unless one is in flight (`ReadIndexBatcher.issue_pending`: the readers that arrived
  while the previous Ready was handled share it); for each Ready, in this order (Raft thesis
  §10.2.1, and the durability contract in cluster/raft/rawnode.py):
    1. hand the `committed_entries` this member's WAL already holds durably to the **applier**
       queue (on the leader all of them, so their apply overlaps this Ready's fsync; conf
       changes take effect in the core at once);
    2. send `messages` (the leader's appends and heartbeats go out in parallel with its fsync),
       except the leader's commit-only appends: those wait up to `commit_notice_delay` for a
       later append to carry the commit index instead, unless the follower forwarded one of
       the committed proposals (`_send`);
    3. append `entries` + `hard_state` to the WAL, fsync once if `must_sync` (worker thread; the
       loop keeps accepting proposals meanwhile: they all land in the next Ready, one fsync).
       A Ready that only moves the commit index is not written at all (see `_handle_ready`);
    4. mirror them into the in-memory Raft storage (only now are they durable);
    5. send `messages_after_persist` (acknowledgements of what is now durable);
    6. hand the rest of `committed_entries` (a follower's, that came in this very Ready) to the
       applier, and feed `read_states` to the `ReadIndexBatcher`;
    7. `advance()`.
- **applier**: hands committed batches to the apply callback in index order, one call at a time
  (apply of batch N overlaps the fsync of batch N+1), then releases readers waiting for applied
  >= their read index.

Exactly once across restarts: the core re-delivers every committed entry after its snapshot; the
applier passes only entries past the store's `applied_index` to the apply callback, while conf
changes are always re-applied to the core (it keeps membership in memory only). A conf change
entry reaches the apply callback with its ConfChange's context as data (the application's
description of the change; empty for the bootstrap entries).

Snapshots (with a `StoreImage`, seam.py): the store is the state machine image, so a Raft
snapshot holds only (index, term, ConfState).
- **Compaction**: between Readies, once applied − last snapshot index ≥ `snapshot_count`: on the
  `wal` thread, `image.sync()` (the store is now durable up to applied), the snapshot file, the
  WAL marker + fsync, `release_to` (older WAL segments go); then the in-memory log is compacted,
  keeping `catch_up_entries` behind so a slightly lagging follower catches up from the log.
- **Install** (a follower whose next entry the leader compacted away): the transport writes the
  leader's store image to `wal.received_db_path(index, term)` (fsynced) and steps the MsgSnap;
  the Ready carrying the snapshot saves the snapshot file and WAL marker (fsync), acknowledges,
  then swaps the store for the image (no apply batch in flight; queued older entries dropped).
  The image's applied index may exceed the snapshot's: entries up to it are skipped when they
  arrive. A crash between the marker and the swap is finished at restart from the kept image.

Failures reach callers as etcd errors: `propose` raises "etcdserver: no leader" (or "leader
changed" during a transfer) when the core refuses; a proposal forwarded to a leader that dies is
lost and its proposer times out ("etcdserver: request timed out", the Proposer's sweep); readers
fail with "leader changed" when the leader changes under them.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Protocol, Sequence

from cluster.raft import (
    Config,
    ConfChange,
    ConfState,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Ready,
    RequestDropped,
    Snapshot,
    SnapshotMetadata,
)
from cluster.raft import Entry as RaftEntry
from cluster.raft.errors import RaftError
from cluster.raft.codec import decode_conf_change
from cluster.server import errors as server_errors
from cluster.server.seam import ApplyCallback, Entry, StoreImage

from .errors import LEADER_CHANGED, NO_LEADER, BootstrapError
from .read_index import ReadIndexBatcher

log = logging.getLogger(__name__)

_REPLAY_CHUNK = 512  # entries per apply call while catching up
DEFAULT_SNAPSHOT_COUNT = 100_000  # etcd's --snapshot-count default
CATCH_UP_ENTRIES = 5000  # etcd's SnapshotCatchUpEntries: entries kept behind a compaction
COMMIT_NOTICE_DELAY = 0.005  # longest a leader holds a commit-only append (see `_send`)


class RaftWAL(Protocol):
    """The durable Raft log the driver writes through (worker thread only, never concurrently).

    `load()` returns the last saved HardState and the entries in log order (a later entry with
    an index already present replaces the suffix, as Raft truncation does). `save()` appends,
    fsyncs when `sync` is true and returns the fsync duration in seconds (0 when not synced).
    """

    def load(self) -> tuple[HardState, list[RaftEntry]]: ...

    def save(self, hard_state: HardState | None, entries: list[RaftEntry], sync: bool) -> float: ...

    def close(self) -> None: ...


class PeerNetwork(Protocol):
    """What the driver needs from the transport. `send` never blocks and never raises: a message
    that cannot be delivered is dropped and reported through `RaftDriver.report_unreachable`."""

    async def start(self, driver: "RaftDriver") -> None: ...

    def send(self, messages: list[Message]) -> None: ...

    async def stop(self) -> None: ...


class RaftDriver:
    """Raft replication for one member, behind the `ReplicatedLog` seam."""

    def __init__(self, node_id: int, voters: list[int], wal: RaftWAL, network: PeerNetwork, *,
                 tick_interval: float, election_ticks: int, request_timeout: float,
                 observe_fsync: Callable[[float], None] | None = None,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 on_leader_change: Callable[[int], None] | None = None,
                 count_read_round: Callable[[], None] | None = None,
                 count_reads: Callable[[int], None] | None = None,
                 rng: random.Random | None = None,
                 image: StoreImage | None = None,
                 snapshot_count: int = DEFAULT_SNAPSHOT_COUNT,
                 catch_up_entries: int = CATCH_UP_ENTRIES,
                 commit_notice_delay: float = COMMIT_NOTICE_DELAY,
                 pre_vote: bool = True, initial_election_tick_advance: bool = True,
                 count_slow_read: Callable[[], None] | None = None,
                 count_failed_read: Callable[[], None] | None = None,
                 count_late_heartbeat: Callable[[], None] | None = None):
        """`voters`: the founding members' ids (used only to bootstrap an empty log).
        `election_ticks`: election timeout in ticks (etcd: election-timeout / heartbeat-interval);
        the heartbeat is one tick. Callbacks run on the loop. `image`: the store as snapshots
        see it; without one the log is never compacted and leader snapshots cannot be installed.
        `pre_vote`, `initial_election_tick_advance`: etcd's --pre-vote and
        --initial-election-tick-advance. `count_slow_read`, `count_failed_read`: ReadIndex
        rounds reissued or timed out, and refused (read_index.py). `count_late_heartbeat()`: the
        leader sent a follower's heartbeat more than two heartbeat intervals after the previous
        one (etcd's heartbeat_send_failures: the leader is overloaded)."""
        self.node_id = node_id
        self._voters = sorted(voters)
        self._wal = wal
        self._network = network
        self._tick_interval = tick_interval
        self._election_ticks = election_ticks
        self._observe_fsync = observe_fsync
        self._on_fatal = on_fatal
        self._on_leader_change = on_leader_change
        self._rng = rng or random.Random()
        self._pre_vote = pre_vote
        self._tick_advance = initial_election_tick_advance
        self._count_late_heartbeat = count_late_heartbeat
        self._heartbeat_sent: dict[int, float] = {}  # follower -> when the leader last sent one
        self.installing_snapshot = False  # a leader's store image is being installed
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal")
        self._storage = MemoryStorage()
        self._node: RawNode | None = None
        self._wake = asyncio.Event()
        self._reads = ReadIndexBatcher(
            node_id, self._request_read_index, self._wake.set,
            retry_after=max(0.5, 2 * election_ticks * tick_interval),
            timeout=request_timeout, count_round=count_read_round, count_reads=count_reads,
            count_slow=count_slow_read, count_failed=count_failed_read)
        self._to_apply: list[Entry] = []
        self._commit_notices: dict[int, Message] = {}  # peer -> held commit-only append
        self._notice_timer: asyncio.TimerHandle | None = None
        self._commit_notice_delay = commit_notice_delay
        self._forwarded_upto: dict[int, int] = {}  # peer -> last index of a proposal it forwarded
        self._wake_applier = asyncio.Event()
        self._apply: ApplyCallback | None = None
        self._apply_floor = 0  # entries at or below it are already in the store
        self._applied = 0
        self._applied_waiters: list[tuple[int, int, asyncio.Future]] = []
        self._waiter_seq = itertools.count()
        self._lead = 0
        self.image = image
        self._snapshot_count = max(1, snapshot_count)
        self._catch_up_entries = max(0, catch_up_entries)
        self._snap_index = 0  # index of the newest durable snapshot
        self._conf_at: list[tuple[int, ConfState]] = [(0, ConfState())]  # (index, conf after it)
        self._apply_lock = asyncio.Lock()  # an apply batch, or a store image install
        self._stopped = True
        self._tasks: list[asyncio.Task] = []

    # -- ReplicatedLog ------------------------------------------------------------------------

    async def start(self, apply: ApplyCallback, applied_index: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            hard_state, entries = await loop.run_in_executor(self._io, self._wal.load)
            snap: Snapshot | None = getattr(self._wal, "snapshot", None)
            snap_index = snap.metadata.index if snap is not None else 0
            fresh = hard_state.is_empty() and not entries and snap is None
            if fresh and applied_index > 0:
                raise BootstrapError(
                    f"the store has applied index {applied_index} but the Raft log is empty: this "
                    "data dir was not written by a Raft member; start from an empty --data-dir")
            if applied_index < snap_index:
                applied_index = await self._install_kept_image(snap, applied_index)
            self._discard_received_images()
            last_index = entries[-1].index if entries else snap_index
            if applied_index > last_index and snap is None:
                raise BootstrapError(
                    f"the store has applied index {applied_index}, past the WAL's last entry "
                    f"{last_index}: the WAL does not belong to this store")
            # (With a snapshot, a store installed from a leader's image may be ahead of the log:
            # the entries up to its applied index are committed and the leader sends them again.)
            commit = max(hard_state.commit, snap_index, min(applied_index, last_index))
            if commit > hard_state.commit:
                # Only a commit-index update was lost (saved without fsync); the store applied
                # these entries, so they were committed, and they are durable in the WAL.
                hard_state = HardState(hard_state.term, hard_state.vote, commit)
        except BootstrapError as exc:
            log.critical("refusing to start", extra={"fields": {"error": str(exc)}})
            raise
        if snap is not None:
            self._storage.apply_snapshot(snap)
            self._snap_index = snap_index
            self._conf_at = [(snap_index, snap.metadata.conf_state)]
        self._storage.append(entries)
        self._storage.set_hard_state(hard_state)
        self._node = RawNode(Config(
            id=self.node_id, storage=self._storage, rng=self._rng, applied=snap_index,
            election_tick=self._election_ticks, heartbeat_tick=1, pre_vote=self._pre_vote))
        if fresh and self._voters:  # a member joining a running cluster starts empty
            self._node.bootstrap(self._voters)
        self._apply = apply
        self._apply_floor = self._applied = applied_index
        log.info("raft log recovered", extra={"fields": {
            "member_id": f"{self.node_id:x}", "entries": len(entries), "term": hard_state.term,
            "snapshot_index": snap_index,
            "commit": hard_state.commit, "applied_index": applied_index, "bootstrap": fresh}})
        self._stopped = False
        self._tasks = [
            asyncio.create_task(self._ready_loop(), name="raft-ready"),
            asyncio.create_task(self._apply_loop(), name="raft-apply"),
        ]
        self._wake.set()
        # Deliver what this member already knows to be committed before serving anything.
        await self._wait_applied(max(hard_state.commit, len(self._voters) if fresh else 0))
        await self._network.start(self)
        if self._tick_advance:
            self._hasten_first_election()
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="raft-tick"))

    def propose(self, data: bytes) -> None:
        if self._stopped:
            raise server_errors.STOPPED
        try:
            self._node.propose(data)
        except RequestDropped:
            raise NO_LEADER if self._node.raft.lead == 0 else LEADER_CHANGED from None
        self._wake.set()

    async def read_barrier(self) -> None:
        if self._stopped:
            raise server_errors.STOPPED
        index = await self._reads.wait_read_index()
        await self._wait_applied(index)

    async def stop(self) -> None:
        if self._stopped and not self._tasks:
            return
        if not self._stopped:
            await self._hand_over_leadership()
        self._stopped = True
        self._reads.fail_all(server_errors.STOPPED)
        if self._notice_timer is not None:
            self._notice_timer.cancel()
            self._notice_timer = None
        await self._network.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        for _, _, fut in self._applied_waiters:
            if not fut.done():
                fut.set_exception(server_errors.STOPPED)
        self._applied_waiters = []
        await asyncio.get_running_loop().run_in_executor(self._io, self._wal.close)
        self._io.shutdown(wait=True)

    @property
    def committed_index(self) -> int:
        return self._node.raft.log.committed if self._node else 0

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def term(self) -> int:
        return self._node.raft.term if self._node else 0

    @property
    def leader_id(self) -> int:
        return self._lead

    # -- beyond the seam: what only a multi-member log offers -----------------------------------

    @property
    def peers(self) -> PeerNetwork:
        """The peer transport (lease calls forwarded to the leader go through it)."""
        return self._network

    async def transfer_leadership(self, transferee: int, timeout: float) -> bool:
        """Leader only: hand leadership to voter `transferee` (etcd's MoveLeader) and wait up to
        `timeout` seconds until it leads. True once it does; False on timeout."""
        if self._stopped:
            raise server_errors.STOPPED
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._lead != transferee:
            self._node.transfer_leader(transferee)
            self._wake.set()
        while self._lead != transferee:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(self._tick_interval)
        return True

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change; `cc.context` reaches the apply callback as the entry's
        data when it commits (the core applies `cc` itself at hand-out). Raises "no leader" /
        "leader changed" when the core refuses it, as `propose` does; the leader also refuses
        while an earlier conf change is not applied."""
        if self._stopped:
            raise server_errors.STOPPED
        try:
            self._node.propose_conf_change(cc)
        except RequestDropped:
            raise NO_LEADER if self._node.raft.lead == 0 else LEADER_CHANGED from None
        self._wake.set()

    def match_index(self, member_id: int) -> int | None:
        """Leader only: the highest log index known replicated on `member_id` (None: unknown)."""
        if self._node is None:
            return None
        pr = self._node.status().progress.get(member_id)
        return None if pr is None else pr.match

    def is_voter(self, member_id: int) -> bool:
        """Whether `member_id` is a voting member in the current configuration."""
        return member_id in self._node.status().conf_state.voters if self._node else False

    # -- inputs from the transport (event loop) -------------------------------------------------

    def step(self, m: Message) -> None:
        """A message from a peer."""
        if self._stopped:
            return
        self._node.step(m)
        if m.type == MessageType.MsgProp and self._lead == self.node_id:
            self._forwarded_upto[m.frm] = self._node.raft.log.last_index()
        self._wake.set()

    def report_unreachable(self, peer_id: int) -> None:
        """The transport dropped messages to `peer_id`: the leader stops pipelining to it."""
        if not self._stopped:
            self._node.report_unreachable(peer_id)
            self._wake.set()

    def report_snapshot(self, peer_id: int, failed: bool) -> None:
        if not self._stopped:
            self._node.report_snapshot(peer_id, failed)
            self._wake.set()

    def received_image_path(self, index: int, term: int) -> str:
        """Where the transport must leave (fsynced) the leader's store image for snapshot
        (index, term) before calling `receive_snapshot`."""
        if self.image is None or not hasattr(self._wal, "received_db_path"):
            raise RuntimeError("this member cannot install snapshots")
        return str(self._wal.received_db_path(index, term))

    def receive_snapshot(self, m: Message) -> None:
        """A leader's MsgSnap whose store image is complete at `received_image_path`. An image
        the core does not take (a stale snapshot: it only answers with its commit index) is
        deleted at once; a taken one is installed by the Ready that carries the snapshot."""
        self.step(m)
        md = m.snapshot.metadata
        pending = self._node.raft.log.unstable.snapshot if self._node is not None else None
        if pending is None or (pending.metadata.index, pending.metadata.term) != (md.index, md.term):
            try:
                os.unlink(self.received_image_path(md.index, md.term))
            except FileNotFoundError:
                pass

    # -- internals ------------------------------------------------------------------------------

    def _request_read_index(self, ctx: bytes) -> None:
        self._node.read_index(ctx)  # RequestDropped propagates to the batcher
        self._wake.set()

    async def _hand_over_leadership(self) -> None:
        """A leader that stops first hands leadership to its most up-to-date voter (etcd 3.1's
        TransferLeadership on shutdown), so clients see a hand-over, not an election timeout.
        Best effort, bounded by one election timeout; proposals meanwhile get "leader changed"."""
        if self._lead != self.node_id:
            return
        st = self._node.status()
        candidates = [(pr.match, peer) for peer, pr in st.progress.items()
                      if peer != self.node_id and not pr.is_learner]
        if not candidates:
            return
        _, transferee = max(candidates)
        self._node.transfer_leader(transferee)
        self._wake.set()
        deadline = asyncio.get_running_loop().time() + self._election_ticks * self._tick_interval
        while self._lead in (0, self.node_id) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(self._tick_interval / 4)
        log.info("leadership handed over on stop", extra={"fields": {
            "member_id": f"{self.node_id:x}", "transferee": f"{transferee:x}",
            "leader": f"{self._lead:x}", "done": self._lead not in (0, self.node_id)}})

    def _hasten_first_election(self) -> None:
        """As etcd does at start: a sole voter campaigns at once; otherwise the clock is advanced
        to one tick before the election timeout (its random part still spreads candidates), so
        that a fresh cluster elects in about one heartbeat rather than a whole timeout. Pre-vote
        keeps a restarted member from disturbing a live leader this way."""
        voters = self._node.status().conf_state.voters
        if tuple(voters) == (self.node_id,):
            self._node.campaign()
        else:
            for _ in range(self._election_ticks - 1):
                self._node.tick()
        self._wake.set()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval)
            self._node.tick()
            self._wake.set()

    async def _ready_loop(self) -> None:
        node = self._node
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while True:
                    # every reader that arrived since the last Ready joined the pending round
                    self._reads.issue_pending()
                    if not node.has_ready():
                        break
                    await self._handle_ready(node.ready())
                    node.advance()
                if (self.image is not None and not self._stopped
                        and self._applied - self._snap_index >= self._snapshot_count):
                    await self._compact_log()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the WAL cannot be written: stop, as etcd panics
            self._fail(exc, "raft ready loop failed")
            raise

    async def _handle_ready(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self._set_leader(rd.soft_state.lead)
        snap = rd.snapshot
        if snap is not None:
            image_path = self.received_image_path(snap.metadata.index, snap.metadata.term)
            if not os.path.exists(image_path):  # never write a marker we could not restore
                raise RuntimeError(f"snapshot {snap.metadata.index} to install, but no store "
                                   f"image at {image_path}")
        committed = rd.committed_entries
        early = self._durable_prefix(committed) if snap is None else 0
        if early:
            self._hand_out(committed[:early] if early < len(committed) else committed)
        self._send(rd.messages, committed)
        if not rd.entries and snap is None and not rd.must_sync and rd.hard_state is not None:
            # Only the commit index moved. An unsynced write of it would guarantee nothing, and
            # start() recovers the commit index from the store's applied index anyway; the next
            # Ready with entries writes the HardState with it. Skipping the write spares the
            # `wal` thread a wake-up per commit on every member.
            self._storage.set_hard_state(rd.hard_state)
        elif rd.entries or rd.hard_state is not None or snap is not None:
            loop = asyncio.get_running_loop()
            if snap is None:
                seconds = await loop.run_in_executor(
                    self._io, self._wal.save, rd.hard_state, rd.entries, rd.must_sync)
            else:
                seconds = await loop.run_in_executor(
                    self._io, functools.partial(self._wal.save, rd.hard_state, rd.entries, True,
                                                snapshot=snap))
                self._storage.apply_snapshot(snap)
            if (rd.must_sync or snap is not None) and self._observe_fsync is not None:
                self._observe_fsync(seconds)
            self._storage.append(rd.entries)
            if rd.hard_state is not None:
                self._storage.set_hard_state(rd.hard_state)
        self._send(rd.messages_after_persist)
        if snap is not None:
            await self._install_image(snap, image_path)
        if early < len(committed):
            self._hand_out(committed[early:] if early else committed)
        for rs in rd.read_states:
            self._reads.on_read_state(rs.ctx, rs.index)

    def _durable_prefix(self, committed: list[RaftEntry]) -> int:
        """How many of `committed` (consecutive indexes) this member's WAL already holds durably:
        those up to the last index of the Raft storage (which mirrors only what is durable) whose
        term matches there (same index and term: the same entry, with the same log before it).
        On the leader that is all of them; on a follower, not those arriving in this very Ready."""
        if not committed:
            return 0
        n = min(len(committed), self._storage.last_index() - committed[0].index + 1)
        if n <= 0:
            return 0
        last = committed[n - 1]
        try:
            return n if self._storage.term(last.index) == last.term else 0
        except RaftError:  # compacted or unavailable: leave it to the ordinary path
            return 0

    def _send(self, messages: list[Message], committed: Sequence[RaftEntry] = ()) -> None:
        """Send a Ready's messages. On the leader, when the Ready commits entries (`committed`),
        an append that only tells a follower the new commit index is held back for up to
        `commit_notice_delay` and dropped if a later append to that follower goes out first
        (every append carries the current commit index). One-client writes would otherwise cost
        each follower a second append and its ack per write, and the notices' writes (inline,
        holding the GIL) and the followers' applies would compete with the leader's apply and
        answer for the 2 cores. A follower that forwarded a proposal at or past this batch's
        first index is told at once: its client waits for its own apply. So is every follower
        when the batch changes the membership (operators list members on other endpoints right
        after). A held notice goes out before any other later message to its follower but a
        heartbeat (which carries the commit index itself)."""
        held = self._commit_notices
        defer = (bool(committed) and self._lead == self.node_id
                 and not any(e.type == EntryType.CONF_CHANGE for e in committed))
        first = committed[0].index if defer else 0
        out: list[Message] = []
        for m in messages:
            if m.type == MessageType.MsgApp and not m.entries:
                if defer and self._forwarded_upto.get(m.to, 0) < first:
                    held[m.to] = m  # the newest notice supersedes an older one
                    continue
            if m.type == MessageType.MsgHeartbeat:
                self._observe_heartbeat(m.to)
            elif m.to in held:
                notice = held.pop(m.to)
                if m.type != MessageType.MsgApp:
                    out.append(notice)
            out.append(m)
        self._network.send(out)
        if held and self._notice_timer is None:
            self._notice_timer = asyncio.get_running_loop().call_later(
                self._commit_notice_delay, self._send_commit_notices)

    def _observe_heartbeat(self, to: int) -> None:
        """etcd's timeout detector: a heartbeat to `to` more than two heartbeat intervals after
        the previous one means the leader could not keep time (a blocked loop, a starved CPU)."""
        now = time.monotonic()
        last = self._heartbeat_sent.get(to)
        self._heartbeat_sent[to] = now
        if last is not None and now - last > 2 * self._tick_interval:
            log.warning("leader failed to send out heartbeat on time; took too long, leader is "
                        "overloaded likely from slow disk", extra={"fields": {
                            "to": f"{to:x}", "heartbeat-interval": f"{self._tick_interval * 1000:g}ms",
                            "expected-duration": f"{2 * self._tick_interval * 1000:g}ms",
                            "exceeded-duration": f"{(now - last - 2 * self._tick_interval) * 1000:.1f}ms"}})
            if self._count_late_heartbeat is not None:
                self._count_late_heartbeat()

    def _send_commit_notices(self) -> None:
        """The held commit notices are due (a loop timer)."""
        self._notice_timer = None
        held, self._commit_notices = self._commit_notices, {}
        if held and self._lead == self.node_id and not self._stopped:
            self._network.send(list(held.values()))

    def _hand_out(self, committed: list[RaftEntry]) -> None:
        """Queue committed entries for the apply callback; make conf changes effective now."""
        floor = self._apply_floor
        out = self._to_apply
        for e in committed:
            data = e.data
            if e.type == EntryType.CONF_CHANGE:
                cc = decode_conf_change(data)
                self._conf_at.append((e.index, self._node.apply_conf_change(cc)))
                data = cc.context  # the application's change (empty for bootstrap entries)
            if e.index > floor:
                out.append(Entry(e.index, e.term, data))
        if out:
            self._wake_applier.set()

    def _set_leader(self, lead: int) -> None:
        if lead == self._lead:
            return
        previous, self._lead = self._lead, lead
        self._heartbeat_sent.clear()  # a new leader's heartbeats start on time
        log.info("raft leader changed", extra={"fields": {
            "member_id": f"{self.node_id:x}", "leader": f"{lead:x}", "previous": f"{previous:x}",
            "term": self.term}})
        if previous:
            self._reads.fail_all(LEADER_CHANGED)
        if lead and self._on_leader_change is not None:
            self._on_leader_change(lead)

    async def _apply_loop(self) -> None:
        try:
            while True:
                await self._wake_applier.wait()
                self._wake_applier.clear()
                while self._to_apply:
                    batch = self._to_apply[:_REPLAY_CHUNK]
                    del self._to_apply[:_REPLAY_CHUNK]
                    async with self._apply_lock:
                        # a store image installed meanwhile covers these entries
                        batch = [e for e in batch if e.index > self._applied]
                        if not batch:
                            continue
                        await self._apply(batch)
                        self._applied = batch[-1].index
                    self._release_applied_waiters()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # an entry that cannot be applied: stop, as etcd panics
            self._fail(exc, "apply failed")
            raise

    # -- snapshots ------------------------------------------------------------------------------

    def _conf_state_at(self, index: int) -> ConfState:
        cs = self._conf_at[0][1]
        for i, c in self._conf_at:
            if i > index:
                break
            cs = c
        return cs

    async def _compact_log(self) -> None:
        """Take a snapshot at the applied index and compact the log behind it (module doc)."""
        index = min(self._applied, self._storage.last_index())
        if index <= self._snap_index:
            return
        conf_state = self._conf_state_at(index)
        snap = Snapshot(SnapshotMetadata(index=index, term=self._storage.term(index),
                                         conf_state=conf_state))

        def persist() -> int:
            self.image.sync()  # the store now durably holds everything up to `index`
            return self._wal.compact(snap)

        released = await asyncio.get_running_loop().run_in_executor(self._io, persist)
        self._storage.create_snapshot(index, conf_state, b"")
        compact_to = index - self._catch_up_entries
        if compact_to >= self._storage.first_index():
            self._storage.compact(compact_to)
        self._snap_index = index
        self._conf_at = [(index, conf_state)] + [(i, c) for i, c in self._conf_at if i > index]
        log.info("saved snapshot and compacted raft log", extra={"fields": {
            "member_id": f"{self.node_id:x}", "snapshot_index": index,
            "compacted_to": max(compact_to, 0), "wal_segments_released": released}})

    async def _install_image(self, snap: Snapshot, path: str) -> None:
        """The store becomes the leader's image (snapshot file and marker already durable)."""
        index = snap.metadata.index
        self._to_apply.clear()  # all at or below the old commit index < `index`
        async with self._apply_lock:
            self.installing_snapshot = True
            try:
                applied = await self.image.install_image(path)
            finally:
                self.installing_snapshot = False
            if applied < index:
                raise RuntimeError(f"the leader's store image has applied index {applied}, "
                                   f"behind its snapshot {index}")
            self._apply_floor = self._applied = applied
        self._snap_index = index
        self._conf_at = [(index, snap.metadata.conf_state)]
        self._release_applied_waiters()
        log.info("installed leader snapshot", extra={"fields": {
            "member_id": f"{self.node_id:x}", "snapshot_index": index,
            "snapshot_term": snap.metadata.term, "applied_index": applied}})

    async def _install_kept_image(self, snap: Snapshot, applied_index: int) -> int:
        """At start: the WAL records a leader snapshot the store never installed (a crash in
        between); install the image kept for it."""
        md = snap.metadata
        path = self.received_image_path(md.index, md.term) if self.image is not None else None
        if path is None or not os.path.exists(path):
            raise BootstrapError(
                f"the store has applied index {applied_index}, behind the snapshot at {md.index}, "
                "and the leader's store image for it is missing: the data dir is damaged")
        applied = await self.image.install_image(path)
        log.info("installed kept leader snapshot at start", extra={"fields": {
            "member_id": f"{self.node_id:x}", "snapshot_index": md.index, "applied_index": applied}})
        return applied

    def _discard_received_images(self) -> None:
        """Images received but never installed (a stale MsgSnap, or a crash mid-transfer)."""
        if self.image is None or not hasattr(self._wal, "received_db_path"):
            return
        folder = os.path.dirname(self.received_image_path(1, 1))
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.endswith((".snap.db", ".snap.db.part")):
                    os.unlink(os.path.join(folder, name))

    async def wait_applied(self, index: int) -> None:
        """Return once entries up to `index` are applied (the Cluster service: a forwarded
        change is answered once this member applied it too)."""
        await self._wait_applied(index)

    async def _wait_applied(self, index: int) -> None:
        if self._applied >= index:
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied_waiters, (index, next(self._waiter_seq), fut))
        await fut

    def _release_applied_waiters(self) -> None:
        waiters = self._applied_waiters
        while waiters and waiters[0][0] <= self._applied:
            _, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)

    def _fail(self, exc: BaseException, what: str) -> None:
        log.critical(what, extra={"fields": {"error": repr(exc)}})
        self._stopped = True
        self._reads.fail_all(server_errors.STOPPED)
        if self._on_fatal is not None:
            self._on_fatal(exc)
