"""The sequential specification of one etcd key, with revisions, for the linearizability search.

State is `KeyState(value, rev, exact)`:
- `value`: the current value, or None when the key is absent (never written, or deleted);
- `rev`: the revision of the last write to the key (put or delete); 0 at the start;
- `exact`: False when `rev` is only a strict lower bound — after a "maybe" write whose revision
  nobody observed.

Rules checked at each op's linearization point (etcd's KV contract):
- writes to one key are linearized in increasing revision order (revisions are a total order of
  all writes, consistent with real time);
- a read returns the current value with its mod_revision, and its header revision is at least the
  key's last write revision;
- a put/delete with prev_kv returns exactly the state it replaced;
- a compare-and-swap txn succeeds if and only if the compare holds on the current state.
A "maybe" op (output None) is linearized without output constraints; it may also never happen,
which the search handles by never being forced to linearize it.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from .history import CAS, DELETE, GET, PUT, Op


class KeyState(NamedTuple):
    value: Optional[str]
    rev: int
    exact: bool


INITIAL = KeyState(None, 0, True)


def _kv_matches(state: KeyState, kv) -> bool:
    """Does the observed kv (value, mod_rev) or None equal the current state?"""
    if kv is None:
        return state.value is None
    if state.value is None or kv[0] != state.value:
        return False
    return kv[1] == state.rev if state.exact else kv[1] > state.rev


def _refine(state: KeyState, kv) -> KeyState:
    """After a matching observation, an inexact revision becomes exact."""
    if kv is not None and not state.exact:
        return KeyState(state.value, kv[1], True)
    return state


def _write_rev_ok(state: KeyState, rev: int) -> bool:
    return rev > state.rev


def step(state: KeyState, op: Op) -> Optional[KeyState]:
    """The state after `op` if `op` may be linearized now, else None."""
    out = op.output
    kind = op.kind
    if kind == GET:
        if not _kv_matches(state, out["kv"]):
            return None
        if state.exact and out["rev"] < state.rev:
            return None
        return _refine(state, out["kv"])
    if kind == PUT:
        if out is None:
            hint = op.input.get("rev_hint")
            if hint is not None:
                return KeyState(op.input["value"], hint, True) if hint > state.rev else None
            return KeyState(op.input["value"], state.rev, False)
        if not _kv_matches(state, out["prev"]) or not _write_rev_ok(state, out["rev"]):
            return None
        return KeyState(op.input["value"], out["rev"], True)
    if kind == DELETE:
        if out is None:
            if state.value is None:
                return state
            return KeyState(None, state.rev, False)
        if state.value is None:
            return state if out["deleted"] == 0 else None
        if out["deleted"] != 1 or not _kv_matches(state, out["prev"]) or not _write_rev_ok(state, out["rev"]):
            return None
        return KeyState(None, out["rev"], True)
    if kind == CAS:
        holds = state.value == op.input["expect"]
        if out is None:
            if not holds:
                return state
            hint = op.input.get("rev_hint")
            if hint is not None:
                return KeyState(op.input["value"], hint, True) if hint > state.rev else None
            return KeyState(op.input["value"], state.rev, False)
        if out["succeeded"] != holds or not _kv_matches(state, out["prev"]):
            return None
        if holds:
            if not _write_rev_ok(state, out["rev"]):
                return None
            return KeyState(op.input["value"], out["rev"], True)
        if state.exact and out["rev"] < state.rev:
            return None
        return _refine(state, out["prev"])
    raise ValueError(f"op kind {kind!r} is not in the per-key model")


def describe(state: KeyState) -> str:
    v = "<absent>" if state.value is None else repr(state.value)
    return f"{v}@{state.rev if state.exact else '>' + str(state.rev)}"
