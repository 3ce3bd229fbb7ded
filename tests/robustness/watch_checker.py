"""Watch guarantees, checked against each other and against the recorded KV history.

For every watcher (which watches the whole round prefix from a known start revision, with
prev_kv, and resumes after its last revision on failure):
- ordered: revisions strictly increase (every write of the traffic touches one key, so one event
  per revision), which also rules out duplicates, across resumes included;
- no gaps: every acknowledged write of the history with a revision in [start, last seen] is in
  the watcher's events; and every event another watcher saw in that range is too;
- agreement: two watchers never disagree on the event at a revision;
- prev_kv: equals the previous event on that key (None after a delete or before any write);
- matches history: a PUT event carries a value some put/CAS/lease-put of that key wrote (with the
  acknowledged revision when the write was acknowledged); a DELETE event is a delete (or a lease
  revoke/expiry) of a key that existed.
"""

from __future__ import annotations

from .history import CAS, DELETE, PUT, Op
from .traffic import LeaseRecord, WatchLog


def check_watches(logs: list[WatchLog], ops: list[Op], leases: list[LeaseRecord],
                  other_writes: dict[tuple[str, str], int] | None = None) -> list[str]:
    """`other_writes`: (key, value) -> revision of acknowledged writes made outside the traffic."""
    problems: list[str] = []
    acked: dict[int, tuple[str, str, str]] = {}  # rev -> (key, type, value)
    written: dict[tuple[str, str], list[Op]] = {}
    deletes_possible: set[str] = set()
    for op in ops:
        out = op.output
        if op.kind in (PUT, CAS):
            written.setdefault((op.key, op.input["value"]), []).append(op)
            if out is not None and (op.kind == PUT or out["succeeded"]):
                acked[out["rev"]] = (op.key, "PUT", op.input["value"])
        elif op.kind == DELETE:
            deletes_possible.add(op.key)
            if out is not None and out["deleted"]:
                acked[out["rev"]] = (op.key, "DELETE", None)
    for (key, value), rev in (other_writes or {}).items():
        acked[rev] = (key, "PUT", value)
    lease_values = {(r.key, r.value) for r in leases} | set(other_writes or {})
    lease_keys = {r.key for r in leases}

    union: dict[int, tuple] = {}
    for log in logs:
        if log.errors:
            problems.append(f"watcher {log.wid}: {log.errors}")
        last = 0
        for ev in log.events:
            if ev.rev <= last:
                problems.append(f"watcher {log.wid}: revision {ev.rev} after {last} (out of order or duplicate)")
            last = max(last, ev.rev)
            sig = (ev.key, ev.type, ev.value, ev.prev)
            if ev.rev in union and union[ev.rev] != sig:
                problems.append(f"watchers disagree at revision {ev.rev}: {union[ev.rev]} vs {sig}")
            union.setdefault(ev.rev, sig)
            if ev.type == "PUT":
                if (ev.key, ev.value) in lease_values:
                    continue
                writers = written.get((ev.key, ev.value))
                if not writers:
                    problems.append(f"watcher {log.wid}: PUT {ev.key}={ev.value}@{ev.rev} matches no write")
                else:
                    revs = {w.output["rev"] for w in writers if w.output is not None}
                    if revs and ev.rev not in revs:
                        problems.append(f"watcher {log.wid}: PUT {ev.key}={ev.value}@{ev.rev}, write acked at {revs}")
            elif ev.key not in deletes_possible and ev.key not in lease_keys:
                problems.append(f"watcher {log.wid}: DELETE {ev.key}@{ev.rev} matches no delete")

    # prev_kv against the merged event stream of each key.
    last_by_key: dict[str, tuple | None] = {}
    for rev in sorted(union):
        key, typ, value, prev = union[rev]
        expect = last_by_key.get(key)
        if prev != expect:
            problems.append(f"revision {rev} {typ} {key}: prev_kv {prev}, previous event gives {expect}")
        last_by_key[key] = (value, rev) if typ == "PUT" else None

    for log in logs:
        if not log.events:
            continue
        lo, hi = log.start_rev, log.last_rev
        have = {ev.rev for ev in log.events}
        for rev, (key, typ, value) in acked.items():
            if lo <= rev <= hi and rev not in have:
                problems.append(f"watcher {log.wid}: missing acknowledged {typ} {key}={value}@{rev} (gap)")
        for rev in union:
            if lo <= rev <= hi and rev not in have:
                problems.append(f"watcher {log.wid}: missing revision {rev} that another watcher saw (gap)")
    return problems


def watch_observations(logs: list[WatchLog]):
    """(key, value, mod_revision, time received) of every PUT event: evidence for maybe-writes."""
    for log in logs:
        for ev in log.events:
            if ev.type == "PUT":
                yield ev.key, ev.value, ev.rev, ev.t


def quiet_delete_keys(logs: list[WatchLog], ops: list[Op], keys: list[str]) -> list[str]:
    """Keys whose DELETE events (in the longest watch log) are all acknowledged deletes."""
    if not logs:
        return []
    longest = max(logs, key=lambda l: len(l.events))
    acked = {op.output["rev"] for op in ops
             if op.kind == DELETE and op.output is not None and op.output["deleted"]}
    noisy = {ev.key for ev in longest.events if ev.type == "DELETE" and ev.rev not in acked}
    return [k for k in keys if k not in noisy]
