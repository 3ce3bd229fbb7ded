"""Lease guarantees, from what the lease clients saw.

- No lease expires while kept alive: a keepalive sent at `s` that answered TTL `t` > 0 means the
  leader renewed the lease at or after `s`, so it lives until at least `s + t`. A linearizable
  read that *returned* before `s + t - MARGIN` must still see the key (MARGIN absorbs the lessor's
  expiry-check granularity). The grant works the same way, from the grant's call time.
- Keys of a revoked lease are gone: a read invoked after an acknowledged revoke returned must not
  see the key.
- Keys of an expired lease are gone: a read invoked after a keepalive or TimeToLive said the lease
  is gone must not see the key.
- A revoke may take effect from its call on: it ends the kept-alive window there.
- A leased key never comes back after it was seen gone.
Only leases whose key put was acknowledged are checked for presence.
"""

from __future__ import annotations

from .traffic import LeaseRecord

MARGIN = 0.6


def check_leases(leases: list[LeaseRecord]) -> list[str]:
    problems = []
    for rec in leases:
        alive_until = rec.granted_call + rec.ttl - MARGIN
        for sent, _, ttl in rec.keepalives:
            alive_until = max(alive_until, sent + ttl - MARGIN)
        gone_after = min([t for t in (rec.revoke[1] if rec.revoke else None, rec.expired_seen) if t is not None],
                         default=None)
        revoke_call = min([t for t in (rec.revoke[0] if rec.revoke else None, rec.revoke_maybe) if t is not None],
                          default=None)
        if revoke_call is not None:  # a revoke may take effect from its call on
            alive_until = min(alive_until, revoke_call)
        seen_gone = None
        for call, ret, value in sorted(rec.reads):
            if value is not None and value != rec.value:
                problems.append(f"lease {rec.lease_id:x} key {rec.key}: read {value!r}, wrote {rec.value!r}")
            if rec.put_ret is not None and call > rec.put_ret and ret < alive_until and value is None:
                problems.append(f"lease {rec.lease_id:x} key {rec.key}: gone at read [{call:.3f},{ret:.3f}] "
                                f"while kept alive until {alive_until + MARGIN:.3f}")
            if gone_after is not None and call > gone_after and value is not None:
                problems.append(f"lease {rec.lease_id:x} key {rec.key}: still present at read {call:.3f} "
                                f"after the lease was gone at {gone_after:.3f}")
            if seen_gone is not None and call > seen_gone and value is not None:
                problems.append(f"lease {rec.lease_id:x} key {rec.key}: came back at {call:.3f}")
            if value is None and rec.put_ret is not None and call > rec.put_ret:
                seen_gone = ret if seen_gone is None else min(seen_gone, ret)
    return problems
