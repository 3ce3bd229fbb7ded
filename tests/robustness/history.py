"""Operation records of a robustness round: who asked what, when, and what came back.

Contract of an `Op`:
- `call` is the monotonic time just before the request left the client, `ret` the time just after
  its response arrived. A write that failed or timed out has `ret = math.inf` and `output = None`:
  it is a "maybe" — it may have taken effect at any point after `call`, or never.
- A read that failed is not recorded at all (it has no effect and tells nothing).
- Values written by the traffic are unique per key, so a value identifies the write that made it.
- `kv` tuples are `(value, mod_revision)`; `None` means "the key was absent".
"""

from __future__ import annotations

import gzip
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

KV = Optional[tuple]  # (value: str, mod_revision: int) or None

# Operation kinds checked for linearizability, per key.
PUT = "put"          # input {value}; output {rev, prev: KV}
GET = "get"          # input {}; output {kv: KV, rev: header revision}
DELETE = "delete"    # input {}; output {deleted: 0|1, rev, prev: KV}
CAS = "cas"          # input {expect: str|None, value}; output {succeeded, rev, prev: KV}
# Recorded but not in the per-key linearizability check (see docs/robustness.md).
SGET = "sget"        # serializable get: output {kv, rev, endpoint, conn (connection epoch)}
RANGE = "range"      # prefix range (linearizable): output {kvs: {key: KV}, rev}


@dataclass
class Op:
    """One client operation: client id, kind, key, input, invocation/response time, output."""

    client: int
    kind: str
    key: str
    input: dict
    call: float
    ret: float = math.inf
    output: Optional[dict] = None

    @property
    def maybe(self) -> bool:
        return self.output is None

    def describe(self) -> str:
        ret = "   maybe" if self.maybe else f"{self.ret:8.4f}"
        return (f"[{self.call:8.4f} .. {ret}] c{self.client:<3} {self.kind:<6} {self.key} "
                f"in={_short(self.input)} out={_short(self.output)}")


def _short(d: Any) -> str:
    return json.dumps(d, sort_keys=True, default=str) if d is not None else "?"


@dataclass
class History:
    """Thread-safe recorder of ops plus other observations (watch events, leases, faults)."""

    t0: float = field(default_factory=time.monotonic)
    ops: list[Op] = field(default_factory=list)
    notes: list[tuple[float, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append((self.now(), text))

    def dump(self, path: str) -> None:
        """Write the history as JSON lines (one op per line), for replay and post-mortems."""
        with open(path, "w") as f:
            for op in sorted(self.ops, key=lambda o: o.call):
                d = asdict(op)
                d["ret"] = None if math.isinf(op.ret) else op.ret
                f.write(json.dumps(d, default=list) + "\n")
            for t, text in self.notes:
                f.write(json.dumps({"note": text, "t": t}) + "\n")

    @staticmethod
    def load(path: str) -> "History":
        h = History(t0=0.0)
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt") as f:
            for line in f:
                d = json.loads(line)
                if "note" in d:
                    h.notes.append((d["t"], d["note"]))
                    continue
                d["ret"] = math.inf if d["ret"] is None else d["ret"]
                h.ops.append(Op(**_untuple(d)))
        return h


def _untuple(d: dict) -> dict:
    """JSON turns KV tuples into lists; turn them back so that states compare and hash."""
    out = d.get("output")
    if out:
        for k in ("kv", "prev"):
            if isinstance(out.get(k), list):
                out[k] = tuple(out[k])
        if isinstance(out.get("kvs"), dict):
            out["kvs"] = {k: tuple(v) for k, v in out["kvs"].items()}
    return d
