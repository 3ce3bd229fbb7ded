"""The Raft state machine of one node (``Raft``). Pure: no I/O, no clock, no global RNG.

Inputs are method calls (``step``, ``tick``, ``propose``; ``RawNode`` turns reads, transfers
and campaigns into local messages with term 0); outputs accumulate in fields that
``RawNode.ready()`` collects:

- ``msgs``: messages that may leave *before* the node's pending state is durable. These are
  the leader's MsgApp/MsgSnap/heartbeats (Raft thesis §10.2.1: the leader may write to its
  disk in parallel with replicating), vote requests, forwarded proposals, read-index traffic.
- ``msgs_after_persist``: messages that acknowledge state, so they may leave only after the
  Ready that captured them is durable: MsgAppResp (log is durable up to ``index``),
  MsgVoteResp/MsgPreVoteResp (the term and vote in HardState are durable). Messages addressed
  to the node itself are in here too (its own vote); ``RawNode.advance`` delivers them.
  ``RawNode.ready`` drops those made in an earlier term than the current one.
- ``read_states``: confirmed read indexes.

The leader does not count itself towards a commit quorum when it appends; ``RawNode`` feeds it
a self-addressed MsgAppResp once the entries are durable (on ``advance()``). Likewise a
candidate's own vote counts only once its HardState is durable.

Batching: proposals and read requests only mark that a broadcast is due (``_bcast``,
``_read_round``); ``flush()`` (called by ``RawNode.ready()``) sends one MsgApp per follower and
one heartbeat round for all reads queued since the last round.
"""
from __future__ import annotations

from .codec import decode_conf_change, encode_conf_change
from .config import Config
from .errors import (
    CodecError,
    CompactedError,
    RaftError,
    RequestDropped,
    SnapshotTemporarilyUnavailable,
    UnavailableError,
)
from .log import RaftLog
from .progress import ProgressState, ProgressTracker, VoteResult
from .readonly import ReadOnlyQueue
from .storage import entries_size
from .types import (
    CAMPAIGN_TRANSFER,
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Role,
    Snapshot,
    SoftState,
)

MT = MessageType
_PROBE = ProgressState.PROBE
_REPLICATE = ProgressState.REPLICATE
_SNAPSHOT = ProgressState.SNAPSHOT

# Pending broadcast of appends, settled by flush(): new entries only, or also empty MsgApps
# to carry a new commit index (and to probe new members).
_BCAST_NONE = 0
_BCAST_NEW_ENTRIES = 1
_BCAST_COMMIT = 2


class Raft:
    """Raft consensus for one node: elections, replication, commit, reads, membership.

    Use it through ``RawNode``, which adds the Ready/advance protocol. Conventions: local
    messages have term 0; ``step`` never raises for remote messages, and raises
    ``RequestDropped`` for a local request that cannot be served.
    """

    def __init__(self, cfg: Config) -> None:
        cfg.validate()
        self.id = cfg.id
        self.rng = cfg.rng
        self.log = RaftLog(cfg.storage, cfg.max_committed_size_per_ready)
        self.trk = ProgressTracker(cfg.max_inflight_msgs, cfg.max_inflight_bytes)
        self.max_msg_size = cfg.max_size_per_msg
        self.election_timeout = cfg.election_tick
        self.heartbeat_timeout = cfg.heartbeat_tick
        self.check_quorum = cfg.check_quorum
        self.pre_vote = cfg.pre_vote
        self.disable_proposal_forwarding = cfg.disable_proposal_forwarding

        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = Role.FOLLOWER
        self.is_learner = False
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnlyQueue()
        self.pending_read_index_messages: list[Message] = []
        self.pending_conf_index = 0
        self.lead_transferee = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self.read_rounds = 0  # heartbeat rounds sent to confirm reads (a metric)
        self._bcast = _BCAST_NONE
        self._read_round = False
        self._step = self._step_follower

        hs, cs = cfg.storage.initial_state()
        self._switch_config(set(cs.voters), set(cs.learners))
        if not hs.is_empty():
            self._load_state(hs)
        if cfg.applied > 0:
            self.log.applied_to(cfg.applied)
        self.become_follower(self.term, NONE)

    # -- state ------------------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.state)

    def _load_state(self, hs: HardState) -> None:
        if hs.commit < self.log.committed or hs.commit > self.log.last_index():
            raise RaftError(
                f"hard state commit {hs.commit} out of range "
                f"[{self.log.committed}, {self.log.last_index()}]"
            )
        self.log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def _promotable(self) -> bool:
        """May this node campaign? Only voters, and not while installing a snapshot."""
        return self.id in self.trk.voters and self.log.unstable.snapshot is None

    # -- role transitions -------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )
        self.lead_transferee = NONE
        self.trk.reset_votes()
        next_index = self.log.last_index() + 1
        trk = self.trk
        for node_id, pr in trk.progress.items():
            trk.progress[node_id] = trk.new_progress(next_index, pr.is_learner)
        self.pending_conf_index = 0
        self.read_only = ReadOnlyQueue()
        self.pending_read_index_messages = []
        self._bcast = _BCAST_NONE
        self._read_round = False

    def become_follower(self, term: int, lead: int) -> None:
        self._step = self._step_follower
        self._reset(term)
        self.lead = lead
        self.state = Role.FOLLOWER

    def become_pre_candidate(self) -> None:
        if self.state == Role.LEADER:
            raise RaftError("invalid transition [leader -> pre-candidate]")
        # Pre-candidacy changes neither term nor vote: a failed pre-vote disturbs nobody.
        self._step = self._step_candidate
        self.trk.reset_votes()
        self.lead = NONE
        self.state = Role.PRE_CANDIDATE

    def become_candidate(self) -> None:
        if self.state == Role.LEADER:
            raise RaftError("invalid transition [leader -> candidate]")
        self._step = self._step_candidate
        self._reset(self.term + 1)
        self.vote = self.id
        self.state = Role.CANDIDATE

    def become_leader(self) -> None:
        if self.state == Role.FOLLOWER:
            raise RaftError("invalid transition [follower -> leader]")
        self._step = self._step_leader
        self._reset(self.term)
        self.lead = self.id
        self.state = Role.LEADER
        pr = self.trk.progress[self.id]
        pr.become_replicate()
        pr.recent_active = True
        # There may be an unapplied conf change in the log; refuse new ones until all
        # entries up to here are applied.
        self.pending_conf_index = self.log.last_index()
        # The empty entry of the new term: committing it commits every earlier entry and
        # lets this leader serve reads (Raft §5.4.2, §6.4).
        self._append_entries([Entry()])

    # -- inputs -----------------------------------------------------------------------------

    def tick(self) -> None:
        if self.state == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self._check_quorum()
            # A transfer must finish within one election timeout, or it is abandoned.
            if self.state == Role.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE
        if self.state != Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def step(self, m: Message) -> None:
        """Process one message (remote, or local with term 0)."""
        t = m.type
        if m.term == 0:
            pass
        elif m.term > self.term:
            if t == MT.MsgVote or t == MT.MsgPreVote:
                in_lease = (
                    self.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if in_lease and m.context != CAMPAIGN_TRANSFER:
                    # We heard from a live leader within an election timeout: ignore the
                    # disrupting candidate (and do not adopt its term).
                    return
            if t == MT.MsgPreVote or (t == MT.MsgPreVoteResp and not m.reject):
                pass  # pre-votes never change our term
            elif t == MT.MsgApp or t == MT.MsgHeartbeat or t == MT.MsgSnap:
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and (
                t == MT.MsgHeartbeat or t == MT.MsgApp
            ):
                # A stale leader (e.g. partitioned and back): tell it our term so it steps
                # down, since PreVote/CheckQuorum keep us from bumping its term otherwise.
                self.msgs_after_persist.append(
                    Message(MT.MsgAppResp, to=m.frm, frm=self.id, term=self.term)
                )
            elif t == MT.MsgPreVote:
                self.msgs_after_persist.append(
                    Message(MT.MsgPreVoteResp, to=m.frm, frm=self.id, term=self.term, reject=True)
                )
            return

        if t == MT.MsgHup:
            self._hup(transfer=False)
        elif t == MT.MsgVote or t == MT.MsgPreVote:
            self._handle_vote_request(m)
        else:
            self._step(m)

    def _drop(self, m: Message, reason: str) -> None:
        """Refuse a request: raise for the local caller, silently drop a remote one."""
        if m.frm == self.id:
            raise RequestDropped(reason)

    # -- elections --------------------------------------------------------------------------

    def _hup(self, transfer: bool) -> None:
        if self.state == Role.LEADER or not self._promotable():
            return
        if self._has_unapplied_conf_changes():
            return
        if self.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _has_unapplied_conf_changes(self) -> bool:
        log = self.log
        lo = max(log.applied + 1, log.first_index())
        if lo > log.committed:
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in log.slice(lo, log.committed + 1))

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self.become_pre_candidate()
            vote_type, resp_type, term = MT.MsgPreVote, MT.MsgPreVoteResp, self.term + 1
        else:
            self.become_candidate()
            vote_type, resp_type, term = MT.MsgVote, MT.MsgVoteResp, self.term
        last = self.log.last_index()
        last_term = self.log.last_term()
        context = CAMPAIGN_TRANSFER if transfer else b""
        for node_id in sorted(self.trk.voters):
            if node_id == self.id:
                # Our own vote counts once the HardState holding it is durable.
                self.msgs_after_persist.append(
                    Message(resp_type, to=self.id, frm=self.id, term=term)
                )
            else:
                self.msgs.append(
                    Message(vote_type, to=node_id, frm=self.id, term=term, log_term=last_term,
                            index=last, context=context)
                )

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.MsgPreVote and m.term > self.term)
        )
        resp_type = MT.MsgVoteResp if m.type == MT.MsgVote else MT.MsgPreVoteResp
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A pre-vote is answered with the term the candidate would use.
            self.msgs_after_persist.append(
                Message(resp_type, to=m.frm, frm=self.id, term=m.term)
            )
            if m.type == MT.MsgVote:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.msgs_after_persist.append(
                Message(resp_type, to=m.frm, frm=self.id, term=self.term, reject=True)
            )

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t == MT.MsgProp or t == MT.MsgReadIndex:
            self._drop(m, "no leader")
        elif t == MT.MsgApp:
            self.become_follower(m.term, m.frm)
            self._handle_append_entries(m)
        elif t == MT.MsgHeartbeat:
            self.become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t == MT.MsgSnap:
            self.become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif t == (MT.MsgPreVoteResp if self.state == Role.PRE_CANDIDATE else MT.MsgVoteResp):
            self.trk.record_vote(m.frm, not m.reject)
            _, _, result = self.trk.tally_votes()
            if result == VoteResult.WON:
                if self.state == Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self.become_leader()
                    self._bcast = _BCAST_COMMIT
            elif result == VoteResult.LOST:
                self.become_follower(self.term, NONE)

    # -- follower -----------------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.MsgApp:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append_entries(m)
        elif t == MT.MsgHeartbeat:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t == MT.MsgSnap:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t == MT.MsgProp:
            if self.lead == NONE:
                self._drop(m, "no leader")
            elif self.disable_proposal_forwarding:
                self._drop(m, "proposal forwarding disabled")
            else:
                self.msgs.append(
                    Message(MT.MsgProp, to=self.lead, frm=self.id, entries=m.entries)
                )
        elif t == MT.MsgReadIndex:
            if self.lead == NONE:
                self._drop(m, "no leader")
            else:
                self.msgs.append(
                    Message(MT.MsgReadIndex, to=self.lead, frm=self.id, entries=m.entries)
                )
        elif t == MT.MsgReadIndexResp:
            if len(m.entries) == 1:
                self.read_states.append(ReadState(m.index, m.entries[0].data))
        elif t == MT.MsgTimeoutNow:
            self._hup(transfer=True)
        elif t == MT.MsgTransferLeader:
            if self.lead != NONE:
                # frm stays the transferee (see MessageType.MsgTransferLeader).
                self.msgs.append(Message(MT.MsgTransferLeader, to=self.lead, frm=m.frm))

    def _handle_append_entries(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self.msgs_after_persist.append(
                Message(MT.MsgAppResp, to=m.frm, frm=self.id, term=self.term, index=log.committed)
            )
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.msgs_after_persist.append(
                Message(MT.MsgAppResp, to=m.frm, frm=self.id, term=self.term, index=last_new)
            )
            return
        # Reject, with a hint that lets the leader skip a whole term's worth of entries.
        hint_index, hint_term = log.find_conflict_by_term(min(m.index, log.last_index()),
                                                          m.log_term)
        self.msgs_after_persist.append(
            Message(MT.MsgAppResp, to=m.frm, frm=self.id, term=self.term, index=m.index,
                    reject=True, reject_hint=hint_index, log_term=hint_term)
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        self.msgs.append(
            Message(MT.MsgHeartbeatResp, to=m.frm, frm=self.id, term=self.term, context=m.context)
        )

    def _handle_snapshot(self, m: Message) -> None:
        if m.snapshot is not None and self._restore(m.snapshot):
            index = self.log.last_index()
        else:
            index = self.log.committed
        self.msgs_after_persist.append(
            Message(MT.MsgAppResp, to=m.frm, frm=self.id, term=self.term, index=index)
        )

    def _restore(self, snap: Snapshot) -> bool:
        """Install a leader's snapshot into the log (the app installs its data from Ready).

        Unlike etcd, a node absent from the snapshot's ConfState installs it anyway: a member
        added after the snapshot was taken learns its own membership from the log afterwards.
        """
        md = snap.metadata
        if md.index <= self.log.committed:
            return False
        if self.state != Role.FOLLOWER:
            # Defense in depth: a leader or candidate never installs a snapshot.
            self.become_follower(self.term + 1, NONE)
            return False
        if self.log.match_term(md.index, md.term):
            # Our log already has the snapshot's last entry: just fast-forward commit.
            self.log.commit_to(md.index)
            return False
        self.log.restore(snap)
        self.trk.progress = {}
        self._switch_config(set(md.conf_state.voters), set(md.conf_state.learners))
        return True

    # -- leader -----------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.MsgBeat:
            self._bcast_heartbeat()
            return
        if t == MT.MsgCheckQuorum:
            self._check_quorum()
            return
        if t == MT.MsgProp:
            self._leader_propose(m.entries, local=m.frm == self.id)
            return
        if t == MT.MsgReadIndex:
            self._leader_read_index(m)
            return
        pr = self.trk.progress.get(m.frm)
        if pr is None:
            return
        if t == MT.MsgAppResp:
            self._handle_append_response(m, pr)
        elif t == MT.MsgHeartbeatResp:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == _REPLICATE and pr.inflights.full():
                # All in-flight MsgApps may be lost: let one more through to find out.
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index() or pr.state == _PROBE:
                self._maybe_send_append(m.frm, True)
            if m.context:
                acks = self.read_only.recv_ack(m.frm, m.context)
                if acks is not None and self.trk.vote_result(acks) == VoteResult.WON:
                    for status in self.read_only.advance(m.context):
                        self._respond_read_index(status.request, status.index)
        elif t == MT.MsgSnapStatus:
            if pr.state != _SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for a heartbeat response before probing again.
            pr.probe_sent = True
        elif t == MT.MsgUnreachable:
            if pr.state == _REPLICATE:
                pr.become_probe()
        elif t == MT.MsgTransferLeader:
            self._leader_transfer(m.frm, pr)

    def _check_quorum(self) -> None:
        """Step down unless a quorum of voters was heard from since the last check."""
        if not self.trk.quorum_active():
            self.become_follower(self.term, NONE)
            return
        for node_id, pr in self.trk.progress.items():
            if node_id != self.id:
                pr.recent_active = False

    def _handle_append_response(self, m: Message, pr) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == _REPLICATE:
                    pr.become_probe()
                self._maybe_send_append(m.frm, True)
            return
        if not (pr.maybe_update(m.index) or (pr.match == m.index and pr.state == _PROBE)):
            return
        if pr.state == _REPLICATE:
            pr.inflights.free_le(m.index)
        elif pr.state == _PROBE:
            pr.become_replicate()
        elif pr.match + 1 >= self.log.first_index():
            # A snapshot (or an append) brought the peer past our compaction point.
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            self._release_pending_read_index_messages()
            self._bcast = _BCAST_COMMIT
        if m.frm != self.id:
            sent = False
            while self._maybe_send_append(m.frm, False):
                sent = True
            if not sent and pr.sent_commit < min(self.log.committed, pr.match):
                self._maybe_send_append(m.frm, True)  # let it learn the commit index now
            if m.frm == self.lead_transferee and pr.match == self.log.last_index():
                self._send_timeout_now(m.frm)

    def _maybe_commit(self) -> bool:
        return self.log.maybe_commit(self.trk.committed(), self.term)

    def _append_entries(self, entries: list[Entry]) -> None:
        """Leader: stamp term and index on fresh entries and append them (not yet durable)."""
        index = self.log.last_index()
        term = self.term
        for e in entries:
            index += 1
            e.term = term
            e.index = index
        self.log.append(entries)
        if self._bcast == _BCAST_NONE:
            self._bcast = _BCAST_NEW_ENTRIES

    def propose(self, entries: list[Entry]) -> None:
        """A local proposal of fresh entries (the core owns them from now on).

        The leader appends them; a follower forwards them to its leader; otherwise, and while
        a leader transfer runs, ``RequestDropped`` is raised.
        """
        if self.state == Role.LEADER:
            self._leader_propose(entries, local=True)
        elif self.state != Role.FOLLOWER or self.lead == NONE:
            raise RequestDropped("no leader")
        elif self.disable_proposal_forwarding:
            raise RequestDropped("proposal forwarding disabled")
        else:
            self.msgs.append(Message(MT.MsgProp, to=self.lead, frm=self.id, entries=entries))

    def _leader_propose(self, entries: list[Entry], local: bool) -> None:
        """Append proposed entries. A refused local proposal raises; a refused forwarded one
        is dropped silently (its proposer retries on timeout)."""
        if self.id not in self.trk.progress:
            if local:
                raise RequestDropped("this node is not a member")
            return
        if self.lead_transferee != NONE:
            if local:
                raise RequestDropped(f"leader transfer to {self.lead_transferee} in progress")
            return
        if not entries:
            return
        if not local:  # never mutate a message we received; it may be delivered elsewhere too
            entries = [Entry(0, 0, e.type, e.data) for e in entries]
        if EntryType.CONF_CHANGE in {e.type for e in entries}:
            for i, e in enumerate(entries):
                if e.type != EntryType.CONF_CHANGE:
                    continue
                refusal = self._conf_change_refusal(e)
                if refusal is None:
                    self.pending_conf_index = self.log.last_index() + i + 1
                elif local:
                    raise RequestDropped(refusal)
                else:
                    entries[i] = Entry()  # keep the batch; the remote proposer times out
        self._append_entries(entries)

    def _conf_change_refusal(self, e: Entry) -> str | None:
        if self.pending_conf_index > self.log.applied:
            return "a conf change is already pending (one change at a time)"
        try:
            cc = decode_conf_change(e.data)
        except CodecError:
            return "malformed conf change"
        if cc.type == ConfChangeType.REMOVE_NODE and self.trk.voters == {cc.node_id}:
            return "cannot remove the last voter"
        return None

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send one MsgApp to ``to`` if its progress allows; MsgSnap if its next entry was
        compacted away. Returns whether a message was sent."""
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        last = log.last_index()
        nxt = pr.next
        if nxt > last and not send_if_empty:
            return False
        try:
            prev_term = log.term(nxt - 1)
            entries = log.slice(nxt, last + 1, self.max_msg_size) if nxt <= last else []
        except (CompactedError, UnavailableError):
            return self._maybe_send_snapshot(to, pr)
        self.msgs.append(
            Message(MT.MsgApp, to=to, frm=self.id, term=self.term, log_term=prev_term,
                    index=nxt - 1, entries=entries, commit=log.committed)
        )
        n = len(entries)
        pr.sent_entries(nxt - 1 + n, n, entries_size(entries) if n else 0)
        pr.sent_commit = log.committed
        return True

    def _maybe_send_snapshot(self, to: int, pr) -> bool:
        if not pr.recent_active:
            return False  # don't ship a snapshot to a peer that may be down
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        if snap.is_empty():
            raise RaftError("need a non-empty snapshot to catch up a compacted follower")
        pr.become_snapshot(snap.metadata.index)
        self.msgs.append(Message(MT.MsgSnap, to=to, frm=self.id, term=self.term, snapshot=snap))
        return True

    def _bcast_heartbeat(self) -> None:
        """Heartbeat every peer, carrying the newest pending read ctx (if any): this round
        confirms every read queued so far."""
        ctx = self.read_only.last_pending_ctx()
        if ctx is None:
            ctx = b""
        else:
            self._read_round = False
            self.read_rounds += 1
        committed = self.log.committed
        for node_id, pr in self.trk.progress.items():
            if node_id != self.id:
                # Never tell a follower about a commit index beyond what it is known to hold.
                commit = min(pr.match, committed)
                if commit > pr.sent_commit:
                    pr.sent_commit = commit
                self.msgs.append(
                    Message(MT.MsgHeartbeat, to=node_id, frm=self.id, term=self.term,
                            commit=commit, context=ctx)
                )

    def flush(self) -> None:
        """Send the broadcasts that batched proposals, commits and reads are waiting for."""
        if self.state != Role.LEADER:
            self._bcast = _BCAST_NONE
            self._read_round = False
            return
        if self._bcast != _BCAST_NONE:
            # Empty MsgApps only to carry news: a commit index the peer was not told yet.
            commit_news = self._bcast == _BCAST_COMMIT
            committed = self.log.committed
            self._bcast = _BCAST_NONE
            for node_id, pr in self.trk.progress.items():
                if node_id != self.id:
                    self._maybe_send_append(node_id, commit_news and pr.sent_commit < committed)
        if self._read_round:
            self._bcast_heartbeat()

    # -- reads ------------------------------------------------------------------------------

    def _committed_entry_in_current_term(self) -> bool:
        return self.log.term_or_none(self.log.committed) == self.term

    def _leader_read_index(self, m: Message) -> None:
        if not m.entries:
            return
        if not self._committed_entry_in_current_term():
            # A new leader's commit index may lag the true one until it commits an entry of
            # its own term: hold reads until then.
            self.pending_read_index_messages.append(m)
            return
        if self.trk.is_singleton():
            self._respond_read_index(m, self.log.committed)
            return
        ctx = m.entries[0].data
        if self.read_only.add_request(self.log.committed, m, ctx):
            self.read_only.recv_ack(self.id, ctx)
            self._read_round = True

    def _respond_read_index(self, request: Message, index: int) -> None:
        if request.frm == NONE or request.frm == self.id:
            self.read_states.append(ReadState(index, request.entries[0].data))
        else:
            self.msgs.append(
                Message(MT.MsgReadIndexResp, to=request.frm, frm=self.id, term=self.term,
                        index=index, entries=request.entries)
            )

    def _release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index_messages or not self._committed_entry_in_current_term():
            return
        pending, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in pending:
            self._leader_read_index(m)

    # -- leader transfer --------------------------------------------------------------------

    def _leader_transfer(self, transferee: int, pr) -> None:
        if pr.is_learner:
            return
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return
            self.lead_transferee = NONE
        if transferee == self.id:
            return
        # The transfer must complete within one election timeout.
        self.election_elapsed = 0
        self.lead_transferee = transferee
        if pr.match == self.log.last_index():
            self._send_timeout_now(transferee)
        else:
            self._maybe_send_append(transferee, True)

    def _send_timeout_now(self, to: int) -> None:
        self.msgs.append(Message(MT.MsgTimeoutNow, to=to, frm=self.id, term=self.term))

    # -- membership -------------------------------------------------------------------------

    def bootstrap(self, voters: list[int], learners: list[int]) -> None:
        """Start a brand-new cluster: committed conf-change entries 1..n at term 1.

        The entries are unstable: the first Ready persists them and hands them out as committed
        entries; the application applies them like any conf change (idempotent here).
        """
        if self.log.last_index() != 0:
            raise RaftError("can only bootstrap a node with an empty log")
        self.become_follower(1, NONE)
        changes = [ConfChange(ConfChangeType.ADD_NODE, v) for v in voters] + [
            ConfChange(ConfChangeType.ADD_LEARNER_NODE, n) for n in learners
        ]
        entries = [
            Entry(1, i + 1, EntryType.CONF_CHANGE, encode_conf_change(cc))
            for i, cc in enumerate(changes)
        ]
        self.log.append(entries)
        self.log.committed = len(entries)
        for cc in changes:
            self.apply_conf_change(cc)

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Make a committed conf change effective. Called by the application when it applies
        the entry. Removing the only voter is ignored (deterministically, on every node)."""
        voters, learners = set(self.trk.voters), set(self.trk.learners)
        nid = cc.node_id
        if cc.type == ConfChangeType.ADD_NODE:
            learners.discard(nid)
            voters.add(nid)
        elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
            if nid not in voters:
                learners.add(nid)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            if voters == {nid}:
                return self.trk.conf_state()
            voters.discard(nid)
            learners.discard(nid)
        self._switch_config(voters, learners)
        if self.state == Role.LEADER:
            if self.id not in self.trk.voters:
                # Removed: step down; the remaining members elect a leader among themselves.
                self.become_follower(self.term, NONE)
            else:
                if self._maybe_commit():  # the quorum may have shrunk
                    self._release_pending_read_index_messages()
                self._bcast = _BCAST_COMMIT  # also probes new members right away
                if self.lead_transferee != NONE and self.lead_transferee not in self.trk.voters:
                    self.lead_transferee = NONE
        return self.trk.conf_state()

    def _switch_config(self, voters: set[int], learners: set[int]) -> None:
        trk = self.trk
        trk.voters = frozenset(voters)
        trk.learners = frozenset(learners)
        next_index = self.log.last_index() + 1
        progress = trk.progress
        for node_id in sorted(voters | learners):
            pr = progress.get(node_id)
            if pr is None:
                pr = trk.new_progress(next_index, node_id in learners)
                # New members count as active, so CheckQuorum doesn't depose the leader
                # before they had a chance to answer.
                pr.recent_active = True
                progress[node_id] = pr
            else:
                pr.is_learner = node_id in learners
        for node_id in [n for n in progress if n not in voters and n not in learners]:
            del progress[node_id]
        self.is_learner = self.id in learners
