"""A deterministic, simulated cluster for testing the Raft core, and the invariant checker.

``SimCluster`` runs ``RawNode``s over an in-memory network that can drop, delay, reorder and
duplicate messages, partition nodes (also asymmetrically), and crash nodes. A node's
``MemoryStorage`` plays the role of its disk: a Ready's entries, HardState and snapshot reach
it only when the Ready is persisted (phase 2), so a crash between taking a Ready (phase 1,
early messages already sent) and persisting it loses exactly the unsynced state.

``History`` records what happened cluster-wide and raises ``InvariantViolation`` the moment a
Raft safety property breaks:

- Election Safety: at most one leader per term, over the whole history.
- Log Matching: an entry is identified by (index, term): every node that ever holds that pair
  holds the same payload after the same previous term.
- Leader Completeness: a leader of term T holds every entry committed in a term < T.
- State Machine Safety: no two nodes apply different entries at an index; snapshots carry the
  state every other node had at their index.
- Commit durability: an entry a leader commits is on the disk of a quorum of its voters.
- ReadIndex safety: a read state's index is >= every index committed anywhere before the read
  was requested (any such write may have been acknowledged).
- Durability ordering: acknowledgements leave a node only after what they acknowledge is on
  its "disk".

Everything is driven by one seeded ``random.Random``: a seed replays exactly.
"""
from __future__ import annotations

import random
import struct
import zlib
from collections import Counter, deque

from cluster.raft import (
    Config,
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    RequestDropped,
    Role,
)
from cluster.raft.codec import decode_conf_change, decode_message, encode_message

MT = MessageType
_ACK_TYPES = frozenset({MT.MsgAppResp, MT.MsgVoteResp, MT.MsgPreVoteResp})
_SNAP_DATA = struct.Struct("<QI")  # applied index, digest of the applied entries


class InvariantViolation(AssertionError):
    """A Raft safety property does not hold."""


def state_digest(digest: int, data: bytes) -> int:
    return zlib.crc32(data, digest)


class History:
    """Cluster-wide record of leaders, entries, commits, applies and reads."""

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.entries: dict[tuple[int, int], tuple] = {}  # (index, term) -> (type, data, prev)
        self.committed: dict[int, tuple[int, bytes, int]] = {}  # index -> (term, data, c-term)
        self.applied: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, type, data)
        self.digests: dict[int, int] = {0: 0}  # index -> state digest after applying it
        self.max_applied = 0
        self.max_committed = 0
        self.read_floor: dict[bytes, int] = {}  # ctx -> lowest acceptable read index
        self.reads_served = 0

    def fail(self, what: str) -> None:
        raise InvariantViolation(what)

    def check_leader(self, node_id: int, term: int) -> None:
        holder = self.leaders.setdefault(term, node_id)
        if holder != node_id:
            self.fail(f"election safety: {holder} and {node_id} both leaders of term {term}")

    def check_new_entries(self, node_id: int, prev_term: int | None, entries) -> None:
        known = self.entries
        for e in entries:
            key = (e.index, e.term)
            value = (e.type, e.data, prev_term)
            seen = known.get(key)
            if seen is None:
                known[key] = value
            elif seen != value:
                self.fail(
                    f"log matching: node {node_id} holds {value} at (index {e.index}, term "
                    f"{e.term}), another node held {seen}"
                )
            prev_term = e.term


class SimNode:
    """One simulated member: its disk (``storage``), its live RawNode, its state machine."""

    __slots__ = (
        "id", "storage", "raw", "pending", "applied", "digest", "conf_state", "removed",
        "checked_leadership", "checked_commit",
    )

    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.storage = MemoryStorage()
        self.raw: RawNode | None = None
        self.pending = None  # a Ready taken (early messages sent) but not yet persisted
        self.applied = 0
        self.digest = 0
        self.conf_state = ConfState()
        self.removed = False
        self.checked_leadership = 0  # term for which leader completeness was checked
        self.checked_commit = 0  # commit index up to which commit durability was checked

    @property
    def alive(self) -> bool:
        return self.raw is not None


class SimCluster:
    """Nodes plus the simulated network, all driven by one seeded RNG."""

    def __init__(
        self,
        seed: int,
        voters=(1, 2, 3),
        *,
        election_tick: int = 10,
        heartbeat_tick: int = 2,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_size_per_msg: int = 1 << 20,
        max_inflight_msgs: int = 256,
        codec_roundtrip: bool = False,
        trace_size: int = 80,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.history = History()
        self.inflight: list[Message] = []
        self.blocked: set[tuple[int, int]] = set()
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.codec_roundtrip = codec_roundtrip
        self.node_config = dict(
            election_tick=election_tick,
            heartbeat_tick=heartbeat_tick,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_size_per_msg=max_size_per_msg,
            max_inflight_msgs=max_inflight_msgs,
        )
        self.trace: deque = deque(maxlen=trace_size)
        self.stats: Counter = Counter()  # what the run exercised: message types, faults
        self.nodes: dict[int, SimNode] = {}
        self._request_seq = 0
        self.served_reads: list[tuple[int, object]] = []  # (node id, ReadState) in order
        self._alive: list[SimNode] | None = None  # cache of alive_nodes()
        self._touched: set[int] = set()  # nodes whose role may have changed since check()
        for v in voters:
            node = self._start_node(v)
            node.raw.bootstrap(list(voters))

    # -- nodes ------------------------------------------------------------------------------

    def _start_node(self, node_id: int) -> SimNode:
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = SimNode(node_id)
        snap = node.storage.snapshot()
        node.raw = RawNode(
            Config(
                id=node_id,
                storage=node.storage,
                rng=random.Random(self.rng.getrandbits(64)),
                applied=snap.metadata.index,
                **self.node_config,
            )
        )
        node.pending = None
        if snap.is_empty():
            node.applied, node.digest = 0, 0
        else:
            node.applied, node.digest = _SNAP_DATA.unpack(snap.data)
        node.conf_state = snap.metadata.conf_state
        node.checked_leadership = 0
        node.checked_commit = 0
        self._alive = None
        return node

    def add_node(self, node_id: int) -> SimNode:
        """Start a fresh, empty member (to be added with a conf change)."""
        if node_id in self.nodes:
            raise ValueError(f"node {node_id} exists")
        self.trace.append(("add-node", node_id))
        return self._start_node(node_id)

    def replace_disk(self, node_id: int, storage: MemoryStorage) -> None:
        """(Re)start ``node_id`` from the given disk contents (scenario setup)."""
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = SimNode(node_id)
        self.trace.append(("replace-disk", node_id))
        node.storage = storage
        self._start_node(node_id)

    def crash(self, node_id: int) -> None:
        """Kill a node: its RawNode, unpersisted Ready and state machine are lost."""
        node = self.nodes[node_id]
        self.trace.append(("crash", node_id))
        self.stats["crash"] += 1
        node.raw = None
        node.pending = None
        self._alive = None

    def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node.alive or node.removed:
            return
        self.trace.append(("restart", node_id))
        self._start_node(node_id)

    def raft(self, node_id: int):
        """The live Raft core of a node (for assertions)."""
        return self.nodes[node_id].raw.raft

    def messages(self, mtype: MessageType | None = None, frm=None, to=None) -> list[Message]:
        """In-flight messages matching the filters."""
        return [
            m for m in self.inflight
            if (mtype is None or m.type == mtype) and (frm is None or m.frm == frm)
            and (to is None or m.to == to)
        ]

    def alive_nodes(self) -> list[SimNode]:
        if self._alive is None:
            self._alive = [n for n in self.nodes.values() if n.raw is not None]
        return self._alive

    def leader(self) -> SimNode | None:
        """The alive leader with the highest term, if any."""
        best = None
        for n in self.nodes.values():
            if n.raw is not None and n.raw.raft.state == Role.LEADER:
                if best is None or n.raw.raft.term > best.raw.raft.term:
                    best = n
        return best

    # -- network ----------------------------------------------------------------------------

    def partition(self, *groups) -> None:
        """Only nodes in the same group can talk (nodes in no group are isolated)."""
        self.trace.append(("partition", groups))
        where = {}
        for i, g in enumerate(groups):
            for n in g:
                where[n] = i
        ids = list(self.nodes)
        self.blocked = {
            (a, b) for a in ids for b in ids
            if a != b and (a not in where or b not in where or where[a] != where[b])
        }

    def block(self, frm: int, to: int) -> None:
        """Drop messages from ``frm`` to ``to`` (one direction only)."""
        self.trace.append(("block", frm, to))
        self.blocked.add((frm, to))

    def isolate(self, node_id: int) -> None:
        self.trace.append(("isolate", node_id))
        for other in self.nodes:
            if other != node_id:
                self.blocked.add((node_id, other))
                self.blocked.add((other, node_id))

    def heal(self) -> None:
        self.trace.append(("heal",))
        self.blocked = set()

    def _send(self, msgs) -> None:
        self.inflight.extend(msgs)

    def deliver(self, i: int) -> None:
        """Deliver (or lose) in-flight message ``i``."""
        m = self.inflight[i]
        rng = self.rng
        if self.dup_rate and rng.random() < self.dup_rate:
            pass  # stays in flight: delivered again later
        else:
            del self.inflight[i]
        target = self.nodes.get(m.to)
        lost = (
            target is None
            or target.raw is None
            or (m.frm, m.to) in self.blocked
            or (self.drop_rate and rng.random() < self.drop_rate)
        )
        sender = self.nodes.get(m.frm)
        if lost:
            self.trace.append(("lost", m))
            if sender is not None and sender.raw is not None:
                if m.type == MT.MsgSnap:
                    sender.raw.report_snapshot(m.to, failed=True)
                elif m.type == MT.MsgApp and rng.random() < 0.1:
                    sender.raw.report_unreachable(m.to)
            return
        self.trace.append(("deliver", m))
        self.stats[m.type.name] += 1
        self._touched.add(m.to)
        if self.codec_roundtrip:
            m = decode_message(encode_message(m))
        target.raw.step(m)
        if m.type == MT.MsgSnap and sender is not None and sender.raw is not None:
            sender.raw.report_snapshot(m.to, failed=False)

    def deliver_all(self, pred=None) -> int:
        """Deliver, in send order, every in-flight message matching ``pred``."""
        count = 0
        batch = [m for m in self.inflight if pred is None or pred(m)]
        for m in batch:
            for i, x in enumerate(self.inflight):
                if x is m:
                    self.deliver(i)
                    count += 1
                    break
        return count

    # -- requests ---------------------------------------------------------------------------

    def tick(self, node_id: int) -> None:
        self.trace.append(("tick", node_id))
        self._touched.add(node_id)
        self.nodes[node_id].raw.tick()

    def propose(self, node_id: int, data: bytes) -> bool:
        self.trace.append(("propose", node_id, data))
        try:
            self.nodes[node_id].raw.propose(data)
            return True
        except RequestDropped:
            return False

    def read_index(self, node_id: int) -> bytes | None:
        """Request a read; its index must cover every write committed before it began."""
        self._request_seq += 1
        ctx = b"r%d" % self._request_seq
        self.trace.append(("read", node_id, ctx))
        try:
            self.nodes[node_id].raw.read_index(ctx)
        except RequestDropped:
            return None
        # Every entry committed anywhere so far could have been acknowledged to a client.
        floor = max((n.raw.raft.log.committed for n in self.alive_nodes()), default=0)
        self.history.read_floor[ctx] = max(floor, self.history.max_committed)
        return ctx

    def transfer_leader(self, node_id: int, to: int) -> None:
        self.trace.append(("transfer", node_id, to))
        self.nodes[node_id].raw.transfer_leader(to)

    def propose_conf_change(self, node_id: int, cc: ConfChange) -> bool:
        self.trace.append(("conf-change", node_id, cc))
        try:
            self.nodes[node_id].raw.propose_conf_change(cc)
            return True
        except RequestDropped:
            return False

    def compact(self, node_id: int, keep: int = 0) -> bool:
        """Snapshot a node's state machine at its applied index and drop its log up to
        ``applied - keep``. Only between Readies."""
        node = self.nodes[node_id]
        st = node.storage
        if node.pending is not None or node.applied <= st.snapshot().metadata.index:
            return False
        self.trace.append(("compact", node_id, node.applied, keep))
        self.stats["compact"] += 1
        st.create_snapshot(node.applied, node.conf_state,
                           _SNAP_DATA.pack(node.applied, node.digest))
        upto = node.applied - keep
        if upto >= st.first_index():
            st.compact(upto)
        return True

    # -- the Ready cycle --------------------------------------------------------------------

    def ready(self, node_id: int) -> bool:
        """Phase 1: take a Ready, check it, send the messages allowed before persisting."""
        node = self.nodes[node_id]
        raw = node.raw
        if node.pending is not None or not raw.has_ready():
            return False
        rd = raw.ready()
        self.trace.append(("ready", node_id, rd))
        h = self.history
        for m in rd.messages:
            if m.type in _ACK_TYPES:
                h.fail(f"node {node_id} would send {m.type.name} before persisting")
        if rd.entries:
            h.check_new_entries(
                node_id, raw.raft.log.term_or_none(rd.entries[0].index - 1), rd.entries
            )
        if rd.committed_entries:
            self._record_committed(node, rd.committed_entries)
        for rs in rd.read_states:
            # A duplicated request or response may confirm a ctx twice; both must be safe.
            floor = h.read_floor.get(rs.ctx)
            if floor is None:
                h.fail(f"read state for unknown ctx {rs.ctx!r}")
            if rs.index < floor:
                h.fail(
                    f"read index safety: node {node_id} got read index {rs.index} for "
                    f"{rs.ctx!r}, but index {floor} was committed before the read began"
                )
            h.reads_served += 1
            self.served_reads.append((node_id, rs))
        self._send(rd.messages)
        node.pending = rd
        return True

    def persist(self, node_id: int) -> bool:
        """Phase 2: make the pending Ready durable, send acks, apply, advance."""
        node = self.nodes[node_id]
        rd = node.pending
        if rd is None:
            return False
        self.trace.append(("persist", node_id))
        self._touched.add(node_id)
        st = node.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        for m in rd.messages_after_persist:
            self._check_durable_ack(node, m)
        self._send(rd.messages_after_persist)
        if rd.snapshot is not None:
            self._install_snapshot(node, rd.snapshot)
        removed = []
        for e in rd.committed_entries:
            self._apply(node, e, removed)
        node.pending = None
        node.raw.advance()
        for node_id in removed:
            self._retire(node_id)
        return True

    def handle_ready(self, node_id: int) -> bool:
        node = self.nodes[node_id]
        if node.pending is not None:
            self.persist(node_id)
            return True
        if self.ready(node_id):
            self.persist(node_id)
            return True
        return False

    def _check_durable_ack(self, node: SimNode, m: Message) -> None:
        st = node.storage
        if m.type == MT.MsgAppResp and not m.reject and st.last_index() < m.index:
            self.history.fail(
                f"node {node.id} acks index {m.index} but only {st.last_index()} is durable"
            )
        if m.type == MT.MsgVoteResp and not m.reject:
            hs = st.hard_state()
            # Durable: this vote, or a later term (after which no vote in m.term is possible).
            if hs.term < m.term or (hs.term == m.term and hs.vote != m.to):
                self.history.fail(
                    f"node {node.id} grants a vote to {m.to} in term {m.term} but its "
                    f"durable HardState is {hs}"
                )

    def _record_committed(self, node: SimNode, entries) -> None:
        h = self.history
        term = node.raw.raft.term
        for e in entries:
            seen = h.committed.get(e.index)
            if seen is None:
                h.committed[e.index] = (e.term, e.data, term)
                if e.index > h.max_committed:
                    h.max_committed = e.index
                for other in self.nodes.values():
                    if other.raw is not None and other.raw.raft.state == Role.LEADER:
                        if other.raw.raft.term > term:
                            self._check_holds(other, e.index, e.term, "newly committed")
            elif seen[0] != e.term or seen[1] != e.data:
                h.fail(
                    f"commit safety: node {node.id} commits (term {e.term}, {e.data!r}) at "
                    f"{e.index}; (term {seen[0]}, {seen[1]!r}) was committed there before"
                )

    def _check_holds(self, leader: SimNode, index: int, term: int, why: str) -> None:
        log = leader.raw.raft.log
        if index < log.first_index():
            return  # compacted into a snapshot, which the digests check
        if log.term_or_none(index) != term:
            self.history.fail(
                f"leader completeness: leader {leader.id} of term {leader.raw.raft.term} "
                f"lacks {why} entry {index} (term {term}); it has term "
                f"{log.term_or_none(index)}"
            )

    def _install_snapshot(self, node: SimNode, snap) -> None:
        index, digest = _SNAP_DATA.unpack(snap.data)
        if index != snap.metadata.index:
            self.history.fail(f"snapshot metadata index {snap.metadata.index} != data {index}")
        expected = self.history.digests.get(index)
        if expected != digest:
            self.history.fail(
                f"state machine safety: snapshot at {index} has digest {digest}, history has "
                f"{expected}"
            )
        node.applied, node.digest = index, digest
        node.conf_state = snap.metadata.conf_state
        self.stats["snapshot installed"] += 1

    def _apply(self, node: SimNode, e, removed: list) -> None:
        h = self.history
        if e.index != node.applied + 1:
            h.fail(f"node {node.id} applies {e.index} after {node.applied}")
        seen = h.applied.get(e.index)
        if seen is None:
            h.applied[e.index] = (e.term, e.type, e.data)
            node.digest = state_digest(node.digest, e.data)
            h.digests[e.index] = node.digest
        else:
            if seen != (e.term, e.type, e.data):
                h.fail(
                    f"state machine safety: node {node.id} applies {(e.term, e.type, e.data)} "
                    f"at {e.index}; another node applied {seen}"
                )
            node.digest = state_digest(node.digest, e.data)
        node.applied = e.index
        if e.index > h.max_applied:
            h.max_applied = e.index
        if e.type == EntryType.CONF_CHANGE:
            cc = decode_conf_change(e.data)
            node.conf_state = node.raw.apply_conf_change(cc)
            self.stats["conf change applied"] += 1
            if cc.type == ConfChangeType.REMOVE_NODE and cc.node_id in node.conf_state.voters:
                pass  # removing the last voter is refused deterministically
            elif cc.type == ConfChangeType.REMOVE_NODE:
                removed.append(cc.node_id)

    def _retire(self, node_id: int) -> None:
        """A removed member is shut down for good (as the server does)."""
        node = self.nodes.get(node_id)
        if node is None or node.removed:
            return
        self.trace.append(("retire", node_id))
        node.removed = True
        node.raw = None
        node.pending = None
        self._alive = None

    # -- invariants after every step --------------------------------------------------------

    def campaign(self, node_id: int) -> None:
        self.trace.append(("campaign", node_id))
        self._touched.add(node_id)
        self.nodes[node_id].raw.campaign()

    def check(self) -> None:
        """Election Safety, Leader Completeness and commit durability for every node touched
        since last time (only delivering, ticking, campaigning and persisting can change a
        node's role or commit index)."""
        touched = self._touched
        if not touched:
            return
        h = self.history
        nodes = self.nodes
        for node_id in touched:
            node = nodes[node_id]
            raw = node.raw
            if raw is None:
                continue
            r = raw.raft
            if r.state != Role.LEADER:
                continue
            h.check_leader(node.id, r.term)
            if node.checked_leadership != r.term:
                node.checked_leadership = r.term
                node.checked_commit = r.log.committed
                for index, (term, _, commit_term) in h.committed.items():
                    if commit_term < r.term:
                        self._check_holds(node, index, term, "earlier committed")
            elif r.log.committed > node.checked_commit:
                for index in range(node.checked_commit + 1, r.log.committed + 1):
                    self._check_durable_quorum(node, index)
                node.checked_commit = r.log.committed
        touched.clear()

    def _check_durable_quorum(self, leader: SimNode, index: int) -> None:
        """An entry a leader commits must be on the *disk* of a quorum of its voters."""
        r = leader.raw.raft
        term = r.log.term(index)
        holders = []
        for v in r.trk.voters:
            node = self.nodes.get(v)
            if node is None:
                continue
            st = node.storage
            if st.first_index() > index:
                holders.append(v)  # compacted: covered by its snapshot
            elif st.last_index() >= index and st.term(index) == term:
                holders.append(v)
        if len(holders) < r.trk.quorum():
            self.history.fail(
                f"commit durability: leader {leader.id} (term {r.term}) committed {index} "
                f"but only {sorted(holders)} of voters {sorted(r.trk.voters)} hold it durably"
            )

    # -- composite drivers ------------------------------------------------------------------

    def stabilize(self, limit: int = 10_000) -> None:
        """Persist every Ready and deliver every message until nothing moves (no ticks)."""
        for _ in range(limit):
            moved = False
            for node in list(self.nodes.values()):
                if node.raw is not None:
                    while node.raw is not None and self.handle_ready(node.id):
                        self.check()
                        moved = True
            if self.inflight:
                for m in list(self.inflight):
                    for i, x in enumerate(self.inflight):
                        if x is m:
                            self.deliver(i)
                            self.check()
                            break
                moved = True
            if not moved:
                return
        raise AssertionError("cluster did not stabilize")

    def format_trace(self) -> str:
        lines = []
        for item in self.trace:
            kind = item[0]
            if kind in ("deliver", "lost"):
                lines.append(f"  {kind:8} {format_message(item[1])}")
            else:
                lines.append(f"  {kind:8} " + " ".join(str(x) for x in item[1:]))
        return "\n".join(lines)


def format_message(m: Message) -> str:
    parts = [f"{m.frm}->{m.to} {m.type.name} term={m.term}"]
    if m.type == MT.MsgApp:
        parts.append(f"prev=({m.index},{m.log_term}) commit={m.commit}")
        if m.entries:
            parts.append(
                "entries=" + ",".join(f"{e.index}/{e.term}" for e in m.entries[:6])
                + ("..." if len(m.entries) > 6 else "")
            )
    elif m.type == MT.MsgSnap and m.snapshot is not None:
        md = m.snapshot.metadata
        parts.append(f"snapshot={md.index}/{md.term} voters={list(md.conf_state.voters)}")
    elif m.type == MT.MsgAppResp:
        parts.append(f"index={m.index}")
        if m.reject:
            parts.append(f"reject hint=({m.reject_hint},{m.log_term})")
    elif m.type in (MT.MsgVote, MT.MsgPreVote):
        parts.append(f"last=({m.index},{m.log_term})")
    elif m.type in (MT.MsgVoteResp, MT.MsgPreVoteResp):
        parts.append("reject" if m.reject else "granted")
    elif m.type in (MT.MsgHeartbeat, MT.MsgHeartbeatResp):
        parts.append(f"commit={m.commit}")
        if m.context:
            parts.append(f"ctx={m.context!r}")
    elif m.type == MT.MsgReadIndexResp:
        parts.append(f"index={m.index}")
    return " ".join(parts)
