"""Randomized (seeded) fault schedules over ``SimCluster``, then a liveness check.

A seed picks a cluster shape and a fault profile, then a sequence of steps: deliver an
in-flight message (mostly one of the oldest, sometimes any: delay and reordering), advance the
clock (all nodes, or one: clock drift), take or persist a Ready, propose, read, and faults:
crash/restart (a leader preferably, often with an unpersisted Ready), partitions (isolating
the leader preferably; also asymmetric links), leader transfer, membership changes, log
compaction. Invariants are checked after every step (see harness.py). Finally all faults heal
and a leader must commit a new proposal, applied by every member, within LIVENESS_TICKS.
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from cluster.raft import ConfChange, ConfChangeType, RequestDropped, Role

from .harness import SimCluster, SimNode

ELECTION_TICK = 8
HEARTBEAT_TICK = 2
LIVENESS_TICKS = 40 * ELECTION_TICK


@dataclass
class Profile:
    """The fault mix of one schedule, drawn from its seed."""

    size: int
    drop: float
    dup: float
    crash: float
    partition: float
    membership: bool
    compaction: bool
    transfer: bool
    codec: bool
    small_messages: bool
    max_inflight: int
    check_quorum: bool
    pre_vote: bool
    slow_node: bool  # one node's clock runs slow (clock drift)

    @classmethod
    def draw(cls, rng: random.Random) -> "Profile":
        return cls(
            size=rng.choice((3, 3, 5)),
            drop=rng.choice((0.0, 0.02, 0.1, 0.25)),
            dup=rng.choice((0.0, 0.0, 0.05, 0.15)),
            crash=rng.choice((0.0, 0.1, 0.3)),
            partition=rng.choice((0.0, 0.1, 0.3)),
            membership=rng.random() < 0.35,
            compaction=rng.random() < 0.5,
            transfer=rng.random() < 0.3,
            codec=rng.random() < 0.15,
            small_messages=rng.random() < 0.3,
            max_inflight=rng.choice((2, 4, 256)),
            check_quorum=rng.random() < 0.8,
            pre_vote=rng.random() < 0.8,
            slow_node=rng.random() < 0.3,
        )


@dataclass
class Outcome:
    profile: Profile
    committed: int
    terms: int
    reads: int
    liveness_ticks: int
    stats: dict
    fingerprint: int  # a hash of everything applied and every leader: equal runs, equal value


class ScheduleFailure(AssertionError):
    """A schedule broke an invariant (or the core raised); carries the recent steps."""

    def __init__(self, seed: int, steps: int, cause: BaseException, trace: str) -> None:
        super().__init__(f"seed {seed}: {type(cause).__name__}: {cause}")
        self.seed = seed
        self.steps = steps
        self.cause = cause
        self.trace = trace


def _believed_leaders(c: SimCluster) -> list[SimNode]:
    return [n for n in c.alive_nodes() if n.raw.raft.state == Role.LEADER]


def _request_target(c: SimCluster, rng: random.Random) -> SimNode | None:
    """Mostly a node that believes it leads (possibly a stale one), else anyone alive."""
    leaders = _believed_leaders(c)
    if leaders and rng.random() < 0.7:
        return rng.choice(leaders)
    alive = c.alive_nodes()
    return rng.choice(alive) if alive else None


def run_schedule(seed: int, steps: int = 500) -> Outcome:
    """Run one seeded schedule; raises ScheduleFailure on any violation."""
    schedule = Schedule(seed)
    try:
        return schedule.run(steps)
    except Exception as exc:
        raise ScheduleFailure(seed, steps, exc, schedule.c.format_trace()) from exc


class Schedule:
    """The random walk of one seed over a SimCluster."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = rng = random.Random(seed)
        self.p = p = Profile.draw(rng)
        self.voters = tuple(range(1, p.size + 1))
        self.c = SimCluster(
            rng.getrandbits(64),
            self.voters,
            election_tick=ELECTION_TICK,
            heartbeat_tick=HEARTBEAT_TICK,
            codec_roundtrip=p.codec,
            max_size_per_msg=64 if p.small_messages else 1 << 20,
            max_inflight_msgs=p.max_inflight,
            check_quorum=p.check_quorum,
            pre_vote=p.pre_vote,
        )
        self.c.drop_rate = p.drop
        self.c.dup_rate = p.dup
        self.slow = rng.choice(self.voters) if p.slow_node else None  # its clock runs slow
        self.next_id = max(self.voters) + 1
        self.proposal = 0

    def run(self, steps: int) -> Outcome:
        c, rng = self.c, self.rng
        # Start with a leader so the schedule exercises replication, not only elections.
        c.stabilize()
        c.campaign(rng.choice(self.voters))
        c.stabilize()
        for _ in range(steps):
            self.step()
            c.check()
        ticks = check_liveness(c, b"live-%d" % self.seed)
        h = c.history
        fingerprint = zlib.crc32(
            repr((sorted(h.applied.items()), sorted(h.leaders.items()))).encode()
        )
        return Outcome(
            self.p, len(h.committed), len(h.leaders), h.reads_served, ticks, dict(c.stats),
            fingerprint,
        )

    def step(self) -> None:
        c, rng = self.c, self.rng
        r = rng.random()
        alive = c.alive_nodes()
        if r < 0.42:
            if c.inflight:
                n = len(c.inflight)
                c.deliver(rng.randrange(min(n, 3)) if rng.random() < 0.8 else rng.randrange(n))
        elif r < 0.54:
            if alive:
                c.ready(rng.choice(alive).id)
        elif r < 0.66:
            pending = [n for n in alive if n.pending is not None]
            if pending:
                c.persist(rng.choice(pending).id)
        elif r < 0.74:
            for node in alive:
                if node.id != self.slow or rng.random() < 0.3:
                    c.tick(node.id)
        elif r < 0.77:
            if alive:
                c.tick(rng.choice(alive).id)
        elif r < 0.88:
            target = _request_target(c, rng)
            if target is not None:
                self.proposal += 1
                c.propose(target.id, b"p%d" % self.proposal)
        elif r < 0.92:
            target = _request_target(c, rng)
            if target is not None:
                c.read_index(target.id)
        else:
            self.fault()

    def fault(self) -> None:
        c, rng, p = self.c, self.rng, self.p
        r = rng.random()
        members = [n for n in c.nodes.values() if not n.removed]
        if r < 0.3:
            down = [n for n in members if not n.alive]
            if down and rng.random() < 0.4:
                c.restart(rng.choice(down).id)
            elif rng.random() < p.crash:
                leaders = _believed_leaders(c)
                alive = c.alive_nodes()
                if leaders and rng.random() < 0.5:
                    victim = rng.choice(leaders)
                    # Often right after it sent appends but before its own fsync.
                    if victim.pending is None and rng.random() < 0.7:
                        c.ready(victim.id)
                    c.crash(victim.id)
                elif alive:
                    c.crash(rng.choice(alive).id)
        elif r < 0.5:
            if c.blocked and rng.random() < 0.2:
                c.heal()
            elif rng.random() < p.partition:
                self.partition()
        elif r < 0.62:
            if p.transfer:
                leader = c.leader()
                if leader is not None:
                    voters = [v for v in leader.raw.raft.trk.voters if v != leader.id]
                    if voters:
                        c.transfer_leader(leader.id, rng.choice(voters))
        elif r < 0.78:
            if p.membership:
                self.membership_change()
        elif p.compaction:
            # Mostly everywhere at once, so that lagging nodes need the leader's snapshot.
            for node in c.alive_nodes():
                if rng.random() < 0.8:
                    c.compact(node.id, keep=rng.choice((0, 1, 3)))

    def partition(self) -> None:
        c, rng = self.c, self.rng
        ids = [n.id for n in c.nodes.values() if not n.removed]
        kind = rng.random()
        leader = c.leader()
        if kind < 0.35 and leader is not None:
            c.isolate(leader.id)
            if rng.random() < 0.3:
                # A stalled leader (think GC pause): its clock barely moves, so CheckQuorum
                # is late to depose it while the others elect a new leader. Only ReadIndex
                # confirmation keeps its reads safe.
                self.slow = leader.id
        elif kind < 0.5:
            c.isolate(rng.choice(ids))
        elif kind < 0.8:
            rng.shuffle(ids)
            cut = rng.randrange(1, len(ids))
            c.partition(ids[:cut], ids[cut:])
        else:
            a, b = rng.sample(ids, 2)
            c.block(a, b)  # asymmetric

    def membership_change(self) -> None:
        c, rng = self.c, self.rng
        leader = c.leader()
        if leader is None:
            return
        trk = leader.raw.raft.trk
        voters, learners = sorted(trk.voters), sorted(trk.learners)
        choice = rng.random()
        if choice < 0.3 and self.next_id <= 9:
            new = self.next_id
            self.next_id += 1
            c.add_node(new)
            kind = (
                ConfChangeType.ADD_LEARNER_NODE if rng.random() < 0.6 else ConfChangeType.ADD_NODE
            )
            c.propose_conf_change(leader.id, ConfChange(kind, new))
        elif choice < 0.6 and learners:
            c.propose_conf_change(
                leader.id, ConfChange(ConfChangeType.ADD_NODE, rng.choice(learners))
            )
        elif len(voters) > 2 or learners:
            victim = rng.choice(voters + learners if len(voters) > 2 else learners)
            c.propose_conf_change(leader.id, ConfChange(ConfChangeType.REMOVE_NODE, victim))


def check_liveness(c: SimCluster, marker: bytes) -> int:
    """Heal everything; within LIVENESS_TICKS a leader must commit ``marker`` and every member
    of its configuration must apply it. Returns the ticks it took."""
    c.heal()
    c.drop_rate = c.dup_rate = 0.0
    for node in list(c.nodes.values()):
        if not node.removed and not node.alive:
            c.restart(node.id)
    proposed_at = None
    marker_index = None
    for tick in range(LIVENESS_TICKS):
        c.stabilize()
        leader = c.leader()
        if leader is not None:
            r = leader.raw.raft
            if marker_index is None and proposed_at is not None:
                marker_index = next(
                    (i for i, (_, _, data) in c.history.applied.items() if data == marker), None
                )
            members = [
                c.nodes[i] for i in (*r.trk.voters, *r.trk.learners)
                if i in c.nodes and not c.nodes[i].removed
            ]
            if marker_index is not None and all(
                n.alive and n.applied >= marker_index for n in members
            ):
                return tick
            if marker_index is None and (
                proposed_at is None or tick - proposed_at > 3 * ELECTION_TICK
            ):
                try:
                    leader.raw.propose(marker)
                    proposed_at = tick
                except RequestDropped:
                    pass
                c.stabilize()
        for node in c.alive_nodes():
            c.tick(node.id)
        c.check()
    states = {
        n.id: (n.raw.raft.state.name, n.raw.raft.term, n.raw.raft.log.committed, n.applied)
        if n.alive else ("removed" if n.removed else "down")
        for n in c.nodes.values()
    }
    raise AssertionError(f"liveness: no progress within {LIVENESS_TICKS} ticks; {states}")
