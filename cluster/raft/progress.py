"""The leader's view of each peer (``Progress``) and of the configuration (``ProgressTracker``).

Every method here is O(1) per message (``Inflights.free_le`` is amortized O(1); quorum maths
sorts at most a handful of voters).
"""
from __future__ import annotations

from collections import deque
from enum import IntEnum

from .types import ConfState


class ProgressState(IntEnum):
    """How the leader replicates to a peer.

    PROBE: one MsgApp at a time until the peer's match is found (after a rejection, a restart,
    or an unreachable report). REPLICATE: optimistic pipelining, bounded by ``Inflights``.
    SNAPSHOT: a snapshot is in flight; no MsgApp until it is reported or acknowledged.
    """

    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


class Inflights:
    """Flow control window of MsgApps sent to a replicating peer and not yet acknowledged.

    Each MsgApp is recorded by its last index and byte size; an ack for index ``i`` frees every
    message ending at or before ``i``. Full when either limit is reached.
    """

    __slots__ = ("_window", "_bytes", "max_count", "max_bytes")

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        self._window: deque[tuple[int, int]] = deque()
        self._bytes = 0
        self.max_count = max_count
        self.max_bytes = max_bytes  # 0: unlimited

    def add(self, last_index: int, size: int) -> None:
        self._window.append((last_index, size))
        self._bytes += size

    def free_le(self, index: int) -> None:
        window = self._window
        while window and window[0][0] <= index:
            self._bytes -= window.popleft()[1]

    def free_first_one(self) -> None:
        if self._window:
            self._bytes -= self._window.popleft()[1]

    def full(self) -> bool:
        return len(self._window) >= self.max_count or (
            self.max_bytes > 0 and self._bytes >= self.max_bytes
        )

    def count(self) -> int:
        return len(self._window)

    def bytes(self) -> int:
        return self._bytes

    def reset(self) -> None:
        self._window.clear()
        self._bytes = 0


class Progress:
    """Replication state of one peer, kept by the leader.

    Invariant: ``match < next``. ``match`` is the highest index known durable on the peer; for
    the leader itself it advances only when its own fsync completes (``RawNode.advance``).
    """

    __slots__ = (
        "match",
        "next",
        "state",
        "pending_snapshot",
        "recent_active",
        "probe_sent",
        "inflights",
        "is_learner",
        "sent_commit",
    )

    def __init__(self, next_index: int, inflights: Inflights, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        self.probe_sent = False  # PROBE: a probe is out, wait for its answer or a heartbeat
        self.inflights = inflights
        self.is_learner = is_learner
        self.sent_commit = 0  # the highest commit index told to the peer

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, last_index: int, count: int, size: int) -> None:
        """Record a MsgApp just sent: ``count`` entries ending at ``last_index``."""
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index, size)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, n: int) -> bool:
        """The peer acknowledged ``n``; returns whether ``match`` advanced."""
        if n <= self.match:
            return False
        self.match = n
        if self.next <= n:
            self.next = n + 1
        self.probe_sent = False
        return True

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The peer rejected a MsgApp at ``rejected``; move ``next`` back. False if stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        state = self.state
        if state == ProgressState.REPLICATE:
            return self.inflights.full()
        if state == ProgressState.PROBE:
            return self.probe_sent
        return True

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"inflight={self.inflights.count()}, learner={self.is_learner})"
        )


class ProgressTracker:
    """The configuration (voters, learners) and a ``Progress`` per member; votes in elections.

    Learners get a Progress (they are replicated to) but never count towards a quorum.
    """

    __slots__ = ("voters", "learners", "progress", "votes", "max_inflight", "max_inflight_bytes")

    def __init__(self, max_inflight: int, max_inflight_bytes: int = 0) -> None:
        self.voters: frozenset[int] = frozenset()
        self.learners: frozenset[int] = frozenset()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes

    def new_progress(self, next_index: int, is_learner: bool) -> Progress:
        return Progress(
            next_index, Inflights(self.max_inflight, self.max_inflight_bytes), is_learner
        )

    def conf_state(self) -> ConfState:
        return ConfState(voters=tuple(sorted(self.voters)), learners=tuple(sorted(self.learners)))

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    def committed(self) -> int:
        """The largest index durable on a quorum of voters (0 with no voters)."""
        voters = self.voters
        if not voters:
            return 0
        progress = self.progress
        matches = sorted([progress[v].match for v in voters], reverse=True)
        return matches[len(voters) // 2]

    def quorum_active(self) -> bool:
        """Did a quorum of voters (recently) show signs of life?"""
        progress = self.progress
        active = sum(1 for v in self.voters if progress[v].recent_active)
        return active >= self.quorum()

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        self.votes.setdefault(node_id, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = rejected = 0
        for v in self.voters:
            vote = self.votes.get(v)
            if vote is True:
                granted += 1
            elif vote is False:
                rejected += 1
        return granted, rejected, self.vote_result(self.votes)

    def vote_result(self, votes) -> VoteResult:
        """WON once a quorum of voters said yes, LOST once a yes-quorum became impossible.

        ``votes`` maps node id to bool, or is a set of ids that said yes.
        """
        q = self.quorum()
        if isinstance(votes, dict):
            yes = sum(1 for v in self.voters if votes.get(v) is True)
            no = sum(1 for v in self.voters if votes.get(v) is False)
        else:
            yes = sum(1 for v in self.voters if v in votes)
            no = 0
        if yes >= q:
            return VoteResult.WON
        if len(self.voters) - no < q:
            return VoteResult.LOST
        return VoteResult.PENDING
