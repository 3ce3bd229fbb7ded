"""Watch and lease checkers on hand-built observations."""

from __future__ import annotations

import math

from tests.robustness.history import DELETE, PUT, Op
from tests.robustness.lease_checker import check_leases
from tests.robustness.traffic import LeaseRecord, WatchEvent, WatchLog
from tests.robustness.watch_checker import check_watches, quiet_delete_keys


def put(key, value, rev, prev=None, t=0.0):
    return Op(1, PUT, key, {"value": value}, t, t + 0.1, {"rev": rev, "prev": prev})


def delete(key, rev, prev, t=0.0):
    return Op(1, DELETE, key, {}, t, t + 0.1, {"deleted": 1, "rev": rev, "prev": prev})


OPS = [put("k", "a", 2), put("k", "b", 3, ("a", 2)), delete("k", 4, ("b", 3)), put("j", "x", 5)]


def ev(rev, key, typ, value, prev):
    return WatchEvent(rev, key, typ, value, prev, 0.0)


GOOD = [ev(2, "k", "PUT", "a", None), ev(3, "k", "PUT", "b", ("a", 2)), ev(4, "k", "DELETE", None, ("b", 3)),
        ev(5, "j", "PUT", "x", None)]


def log(events, start=2, wid=0):
    lg = WatchLog(wid, start)
    lg.events = list(events)
    return lg


def test_complete_watch_passes():
    assert check_watches([log(GOOD), log(GOOD[1:], start=3, wid=1)], OPS, []) == []


def test_gap_flagged():
    problems = check_watches([log([GOOD[0], GOOD[2], GOOD[3]])], OPS, [])
    assert any("gap" in p for p in problems)


def test_duplicate_and_reorder_flagged():
    assert any("out of order" in p for p in check_watches([log(GOOD[:2] + GOOD[1:])], OPS, []))
    assert any("out of order" in p for p in check_watches([log([GOOD[1], GOOD[0], *GOOD[2:]])], OPS, []))


def test_wrong_prev_kv_flagged():
    bad = [GOOD[0], ev(3, "k", "PUT", "b", None), *GOOD[2:]]
    assert any("prev_kv" in p for p in check_watches([log(bad)], OPS, []))


def test_event_not_in_history_flagged():
    bad = [*GOOD, ev(6, "k", "PUT", "ghost", None)]
    assert any("matches no write" in p for p in check_watches([log(bad)], OPS, []))
    wrong_rev = [ev(2, "k", "PUT", "a", None), ev(7, "k", "PUT", "b", ("a", 2))]
    assert any("acked at" in p for p in check_watches([log(wrong_rev)], OPS[:2], []))


def test_watchers_disagree_flagged():
    other = [GOOD[0], ev(3, "k", "PUT", "a", ("a", 2))]
    assert any("disagree" in p for p in check_watches([log(GOOD), log(other, wid=1)], OPS, []))


def test_quiet_delete_keys():
    maybe_del = Op(2, DELETE, "j", {}, 0.0, math.inf, None)
    ops = [*OPS, maybe_del]
    assert quiet_delete_keys([log(GOOD)], ops, ["k", "j"]) == ["k", "j"]
    noisy = [*GOOD, ev(6, "j", "DELETE", None, ("x", 5))]
    assert quiet_delete_keys([log(noisy)], ops, ["k", "j"]) == ["k"]


def lease(**kw):
    rec = LeaseRecord(lease_id=1, ttl=3, key="l", value="v", granted_call=0.0, put_ret=0.2)
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def test_lease_kept_alive_and_revoked_passes():
    rec = lease(keepalives=[(1.0, 1.1, 3), (2.0, 2.1, 3)], revoke=(4.0, 4.1),
                reads=[(0.5, 0.6, "v"), (2.5, 2.6, "v"), (4.5, 4.6, None)])
    assert check_leases([rec]) == []


def test_lease_expired_while_kept_alive_flagged():
    rec = lease(keepalives=[(1.0, 1.1, 3), (2.0, 2.1, 3)], reads=[(2.5, 2.6, None)])
    assert any("kept alive" in p for p in check_leases([rec]))


def test_key_of_revoked_lease_present_flagged():
    rec = lease(revoke=(1.0, 1.1), reads=[(1.5, 1.6, "v")])
    assert any("after the lease was gone" in p for p in check_leases([rec]))


def test_key_of_expired_lease_present_flagged():
    rec = lease(expired_seen=4.0, reads=[(4.5, 4.6, "v")])
    assert any("after the lease was gone" in p for p in check_leases([rec]))


def test_leased_key_coming_back_flagged():
    rec = lease(reads=[(5.0, 5.1, None), (5.5, 5.6, "v")])
    assert any("came back" in p for p in check_leases([rec]))


def test_lease_expiring_after_keepalives_stop_passes():
    rec = lease(keepalives=[(1.0, 1.1, 3)], expired_seen=4.2, reads=[(4.5, 4.6, None)])
    assert check_leases([rec]) == []
