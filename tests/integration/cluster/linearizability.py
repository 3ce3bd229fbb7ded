"""A checker for histories of puts and gets on registers (keys never deleted, values unique).

It looks for the anomalies a linearizable store can never show, using only real-time order
(an operation that completed before another was invoked precedes it):
- a read of a value nobody had started writing when the read completed ("read from the future");
- a read that misses a write that completed before the read was invoked, while the value it
  returns was overwritten by that write ("stale read"), including "key absent" after a completed put;
- two reads in real-time order where the later one returns a value whose write completed before
  the earlier one's value was even written ("reads going back in time").
A put that failed or timed out may or may not have taken effect: it counts as a write that may
land at any time after its invocation (it never proves a read stale). Sound, not complete: every
reported violation is real; some exotic violations could pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    """One client operation: `value` is what a put wrote or what a get returned (None: absent)."""

    kind: str  # "put" | "get"
    key: bytes
    value: bytes | None
    invoked: float
    completed: float  # math.inf for a put whose outcome is unknown
    ok: bool = True


def violations(history: list[Op]) -> list[str]:
    """Human-readable descriptions of every anomaly found (empty: none)."""
    found: list[str] = []
    keys = {op.key for op in history}
    for key in keys:
        ops = [op for op in history if op.key == key]
        writes = {op.value: op for op in ops if op.kind == "put"}
        definite = [w for w in writes.values() if w.ok]
        reads = sorted((op for op in ops if op.kind == "get" and op.ok), key=lambda r: r.invoked)
        for r in reads:
            if r.value is None:
                before = [w for w in definite if w.completed < r.invoked]
                if before:
                    found.append(f"{key!r}: read absent at {r.invoked:.3f} after put "
                                 f"{before[0].value!r} completed at {before[0].completed:.3f}")
                continue
            w = writes.get(r.value)
            if w is None or w.invoked > r.completed:
                found.append(f"{key!r}: read {r.value!r} that was never written before it")
                continue
            for later in definite:
                if later is not w and w.completed < later.invoked and later.completed < r.invoked:
                    found.append(f"{key!r}: stale read of {r.value!r} at {r.invoked:.3f}; "
                                 f"{later.value!r} was written after it, by {later.completed:.3f}")
                    break
        for i, r1 in enumerate(reads):
            w1 = writes.get(r1.value) if r1.value is not None else None
            if w1 is None:
                continue
            for r2 in reads[i + 1:]:
                if r2.invoked <= r1.completed:
                    continue
                w2 = writes.get(r2.value) if r2.value is not None else None
                if w2 is None or w2.completed < w1.invoked:
                    found.append(f"{key!r}: read {r2.value!r} at {r2.invoked:.3f} after a read of "
                                 f"{r1.value!r} that completed at {r1.completed:.3f}")
                    break
    return found


UNKNOWN = math.inf
