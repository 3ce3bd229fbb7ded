"""Linearizability checker: Wing–Gong search with Lowe's memoization, partitioned per key.

Algorithm (Wing & Gong 1993; Lowe 2017, "Testing for linearizability"; the same scheme as
Porcupine's, written here from the papers):

- The history of one key becomes a doubly linked list of call and return entries sorted by time.
  At equal times calls come first, so ops that touch at an instant count as concurrent (this can
  only accept more histories, never invent a violation).
- The search walks the list. At a call entry it tries to linearize that op now: if the model
  accepts it and the pair (set of linearized ops as a bitmask, model state) was never seen, the
  op's call and return entries are lifted out of the list, the choice is pushed on a stack, and the
  walk restarts from the head. Reaching a return entry means the op it closes had to be linearized
  already: backtrack (pop, unlift, try the next call after the popped one).
- "Maybe" ops (failed or timed-out writes) have no return entry (return time +infinity): they may
  be linearized anywhere after their call, or never. The search succeeds as soon as every op with
  a finite return time is linearized.
- P-compositionality (Herlihy & Wing): a history is linearizable iff each key's sub-history is,
  because every op in the model touches a single key. Each key is checked on its own.

Preprocessing, sound because every op in the traffic observes the state it acts on (gets read it;
put and delete ask for prev_kv; the CAS txn returns the current kv in both branches) and written
values are unique:
- a maybe write whose value nobody ever observed is dropped: if it happened, nothing came after it,
  so removing it from a valid linearization leaves a valid one;
- a maybe write whose value was observed certainly happened: it gets the observed mod_revision as
  a hint, and the earliest observer's response time as its return time (it must be linearized
  before the op that saw it). Without this bound, every pending maybe op can be tried at every
  point, and the search space grows with 2^(pending maybes);
- maybe deletes on a key where a complete watch (one the watch checker found gap-free from the
  round's start) shows no DELETE event beyond the acknowledged deletes had no effect: dropped.
  (Deletes do not carry unique values, so this is the only evidence about them.) Maybe deletes
  on other keys stay, unbounded: each can still cost a factor of up to 2 in the search.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from . import models
from .history import CAS, DELETE, GET, PUT, Op

LINEARIZED_KINDS = (PUT, GET, DELETE, CAS)


@dataclass
class PartitionResult:
    """Outcome for one key: ok, or the longest linearizable prefix found before giving up."""

    key: str
    ok: bool
    ops: list[Op]
    best_prefix: list[tuple[Op, models.KeyState]] = field(default_factory=list)
    timed_out: bool = False
    steps: int = 0

    def trace(self) -> str:
        """A readable account of a violation: the partition by time, then the best prefix."""
        lines = [f"key {self.key!r}: {'TIMED OUT' if self.timed_out else 'NOT LINEARIZABLE'}"
                 f" ({len(self.ops)} ops, {self.steps} search steps)", "",
                 "Longest linearizable prefix found (op -> state after it):"]
        done = set()
        for op, st in self.best_prefix:
            done.add(id(op))
            lines.append(f"  {op.describe()}  => {models.describe(st)}")
        last = self.best_prefix[-1][1] if self.best_prefix else models.INITIAL
        lines += ["", f"State at the end of that prefix: {models.describe(last)}",
                  "No remaining op below can be linearized next (ops with a response first):"]
        pending = [o for o in self.ops if id(o) not in done]
        for op in sorted(pending, key=lambda o: o.call):
            can = models.step(last, op) is not None
            lines.append(f"  {'could ' if can else 'cannot'} {op.describe()}")
        lines += ["", "All ops of this key, by call time:"]
        lines += [f"  {op.describe()}" for op in sorted(self.ops, key=lambda o: o.call)]
        return "\n".join(lines)


@dataclass
class CheckResult:
    """Outcome for a whole history."""

    ok: bool
    partitions: list[PartitionResult]
    ops_checked: int
    dropped_maybes: int
    seconds: float

    @property
    def violations(self) -> list[PartitionResult]:
        return [p for p in self.partitions if not p.ok]


class _Entry:
    __slots__ = ("op", "idx", "is_call", "match", "prev", "next")

    def __init__(self, op, idx, is_call):
        self.op, self.idx, self.is_call = op, idx, is_call
        self.match = self.prev = self.next = None


def _build_list(ops: list[Op]) -> _Entry:
    events = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i, True))
        if op.ret != math.inf:
            events.append((op.ret, 1, i, False))
    events.sort()
    head = _Entry(None, -1, False)
    calls: dict[int, _Entry] = {}
    prev = head
    for _, _, i, is_call in events:
        e = _Entry(ops[i], i, is_call)
        if is_call:
            calls[i] = e
        else:
            calls[i].match = e
        prev.next, e.prev = e, prev
        prev = e
    return head


def _lift(e: _Entry) -> None:
    e.prev.next = e.next
    if e.next is not None:
        e.next.prev = e.prev
    m = e.match
    if m is not None:
        m.prev.next = m.next
        if m.next is not None:
            m.next.prev = m.prev


def _unlift(e: _Entry) -> None:
    m = e.match
    if m is not None:
        m.prev.next = m
        if m.next is not None:
            m.next.prev = m
    e.prev.next = e
    if e.next is not None:
        e.next.prev = e


def check_partition(key: str, ops: list[Op], step: Callable = models.step,
                    initial=models.INITIAL, deadline: float = math.inf) -> PartitionResult:
    """WGL search with memoization on one key's ops."""
    ops = sorted(ops, key=lambda o: o.call)
    head = _build_list(ops)
    must = sum(1 for o in ops if o.ret != math.inf)
    state = initial
    linearized = 0
    cache: set = set()
    stack: list[tuple[_Entry, object]] = []
    best: list = []
    steps = 0
    entry = head.next
    while must > 0:
        steps += 1
        if steps & 0xFFF == 0 and time.monotonic() > deadline:
            return PartitionResult(key, False, ops, _prefix(stack, state, best), timed_out=True, steps=steps)
        if entry is not None and entry.is_call:
            new_state = step(state, entry.op)
            if new_state is not None:
                new_lin = linearized | (1 << entry.idx)
                memo = (new_lin, new_state)
                if memo not in cache:
                    cache.add(memo)
                    stack.append((entry, state))
                    state, linearized = new_state, new_lin
                    if entry.match is not None:
                        must -= 1
                    _lift(entry)
                    if len(stack) > len(best):
                        best = _prefix(stack, state, [])
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return entry (or the end of the list): its op should have been linearized.
            if not stack:
                return PartitionResult(key, False, ops, best, steps=steps)
            entry, state = stack.pop()
            linearized &= ~(1 << entry.idx)
            if entry.match is not None:
                must += 1
            _unlift(entry)
            entry = entry.next
    return PartitionResult(key, True, ops, steps=steps)


def _prefix(stack, state, best):
    """The linearized ops on `stack` with the state after each (stack holds states before)."""
    out = []
    for i, (e, _) in enumerate(stack):
        after = stack[i + 1][1] if i + 1 < len(stack) else state
        out.append((e.op, after))
    return out if len(out) >= len(best) else best


def prepare(ops: Iterable[Op], extra_observations: Iterable[tuple] = (),
            quiet_delete_keys: Iterable[str] = ()) -> tuple[list[Op], int]:
    """Drop unobserved maybe-writes; bound observed ones (see module doc).

    A maybe write whose (unique) value was observed certainly happened, with the observed
    mod_revision, and before the earliest response that observed it: it gets that revision as a
    hint and that response time as its return time, so the search must linearize it, before then.
    `extra_observations` are (key, value, mod_revision, time seen) from elsewhere (watch events).
    `quiet_delete_keys`: keys on which a complete watch saw no DELETE event that an acknowledged
    delete does not explain; there, no maybe delete took effect, so they are dropped.
    """
    quiet = set(quiet_delete_keys)
    seen: dict[tuple[str, str], tuple[int, float]] = {}
    ops = list(ops)

    def observe(key, kv, t):
        if kv is not None:
            k = (key, kv[0])
            if k not in seen or t < seen[k][1]:
                seen[k] = (kv[1], t)

    for op in ops:
        if op.output is None:
            continue
        out = op.output
        if op.kind == GET:
            observe(op.key, out["kv"], op.ret)
        elif op.kind in (PUT, DELETE, CAS):
            observe(op.key, out.get("prev"), op.ret)
            if op.kind == CAS and out["succeeded"]:
                observe(op.key, (op.input["value"], out["rev"]), op.ret)
    for key, value, rev, *t in extra_observations:
        observe(key, (value, rev), t[0] if t else math.inf)
    kept, dropped = [], 0
    for op in ops:
        if op.maybe and op.kind == DELETE and op.key in quiet:
            dropped += 1
            continue
        if op.maybe and op.kind in (PUT, CAS):
            hit = seen.get((op.key, op.input["value"]))
            if hit is None:
                dropped += 1
                continue
            rev, t = hit
            op = Op(op.client, op.kind, op.key, {**op.input, "rev_hint": rev}, op.call, max(t, op.call), None)
        kept.append(op)
    return kept, dropped


def check_history(ops: Iterable[Op], extra_observations=(), quiet_delete_keys=(),
                  timeout: float = 120.0) -> CheckResult:
    """Check every key's sub-history of linearizable KV ops; other kinds are ignored here."""
    t0 = time.monotonic()
    kept, dropped = prepare([o for o in ops if o.kind in LINEARIZED_KINDS], extra_observations, quiet_delete_keys)
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in kept:
        by_key[op.key].append(op)
    deadline = t0 + timeout
    parts = [check_partition(k, v, deadline=deadline) for k, v in sorted(by_key.items())]
    return CheckResult(all(p.ok for p in parts), parts, len(kept), dropped, time.monotonic() - t0)


def check_revision_order(ops: Iterable[Op]) -> list[str]:
    """Cross-key real-time order of header revisions, for linearizable ops with a response.

    The store's revision only grows, so an op invoked after another returned must answer with a
    header revision at least as high (writes answer their new revision; reads, failed CAS and
    no-op deletes answer the current one). Per-key partitioning cannot see a stale read that is
    stale only relative to writes on other keys; this sweep does.
    """
    done = sorted((o for o in ops if not o.maybe and o.kind in LINEARIZED_KINDS + ("range",)),
                  key=lambda o: o.ret)
    problems = []
    best: Optional[Op] = None
    i = 0
    for op in sorted(done, key=lambda o: o.call):
        while i < len(done) and done[i].ret < op.call:
            if best is None or done[i].output["rev"] > best.output["rev"]:
                best = done[i]
            i += 1
        if best is not None and op.output["rev"] < best.output["rev"]:
            problems.append(f"{op.describe()} answered revision {op.output['rev']} after "
                            f"{best.describe()} had returned revision {best.output['rev']}")
    return problems
