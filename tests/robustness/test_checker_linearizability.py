"""The linearizability checker on hand-built histories: it flags anomalies and passes valid ones."""

from __future__ import annotations

import math
import random
import time

from tests.robustness.history import CAS, DELETE, GET, PUT, History, Op
from tests.robustness.linearizability import check_history

INF = math.inf


def put(c, key, value, call, ret, rev=None, prev=None):
    out = None if rev is None else {"rev": rev, "prev": prev}
    return Op(c, PUT, key, {"value": value}, call, INF if rev is None else ret, out)


def get(c, key, call, ret, kv, rev):
    return Op(c, GET, key, {}, call, ret, {"kv": kv, "rev": rev})


def delete(c, key, call, ret, deleted, rev, prev):
    return Op(c, DELETE, key, {}, call, ret, {"deleted": deleted, "rev": rev, "prev": prev})


def cas(c, key, expect, value, call, ret, succeeded=None, rev=None, prev=None):
    out = None if succeeded is None else {"succeeded": succeeded, "rev": rev, "prev": prev}
    return Op(c, CAS, key, {"expect": expect, "value": value}, call, INF if out is None else ret, out)


def ok(ops):
    res = check_history(ops)
    assert res.ok, "\n\n".join(p.trace() for p in res.violations)
    return res


def bad(ops):
    res = check_history(ops)
    assert not res.ok
    trace = res.violations[0].trace()
    assert "NOT LINEARIZABLE" in trace and "Longest linearizable prefix" in trace
    return res


# ---- valid histories -------------------------------------------------------------------------

def test_sequential_put_get_delete():
    ok([put(1, "k", "a", 0, 1, rev=2), get(2, "k", 2, 3, ("a", 2), 2),
        delete(1, "k", 4, 5, 1, 3, ("a", 2)), get(2, "k", 6, 7, None, 3)])


def test_concurrent_overlapping_ops_either_order():
    # Two overlapping puts; reads during the overlap may see either, later reads the last by rev.
    ops = [put(1, "k", "a", 0, 10, rev=3, prev=("b", 2)), put(2, "k", "b", 1, 9, rev=2, prev=None),
           get(3, "k", 2, 4, ("b", 2), 2), get(4, "k", 5, 8, ("a", 3), 3), get(3, "k", 11, 12, ("a", 3), 3)]
    ok(ops)


def test_read_concurrent_with_write_may_see_old_or_new():
    ok([put(1, "k", "a", 0, 1, rev=2), put(1, "k", "b", 2, 10, rev=3, prev=("a", 2)),
        get(2, "k", 3, 4, ("a", 2), 2), get(3, "k", 3, 5, ("b", 3), 3), get(2, "k", 5, 6, ("b", 3), 3)])


def test_maybe_write_that_happened():
    ok([put(1, "k", "a", 0, 1, rev=2), put(2, "k", "lost?", 2, None),
        get(3, "k", 5, 6, ("lost?", 3), 3), get(3, "k", 7, 8, ("lost?", 3), 3)])


def test_maybe_write_that_never_happened():
    ok([put(1, "k", "a", 0, 1, rev=2), put(2, "k", "lost?", 2, None),
        get(3, "k", 5, 6, ("a", 2), 4), get(3, "k", 100, 101, ("a", 2), 9)])


def test_maybe_write_that_happened_late():
    # The failed put lands long after it was called: reads first see the old value, then the new.
    ok([put(1, "k", "a", 0, 1, rev=2), put(2, "k", "late", 2, None),
        get(3, "k", 5, 6, ("a", 2), 2), get(3, "k", 50, 51, ("late", 7), 7)])


def test_cas_success_and_failure():
    ok([put(1, "k", "a", 0, 1, rev=2),
        cas(2, "k", "a", "b", 2, 3, True, 3, ("a", 2)),
        cas(3, "k", "a", "c", 4, 5, False, 3, ("b", 3)),
        cas(3, "k", None, "d", 6, 7, False, 3, ("b", 3)),
        delete(1, "k", 8, 9, 1, 4, ("b", 3)),
        cas(3, "k", None, "e", 10, 11, True, 5, None), get(2, "k", 12, 13, ("e", 5), 5)])


def test_concurrent_cas_one_wins():
    ok([put(1, "k", "a", 0, 1, rev=2),
        cas(2, "k", "a", "x", 2, 6, True, 3, ("a", 2)),
        cas(3, "k", "a", "y", 2, 6, False, 3, ("x", 3))])


def test_maybe_cas_that_happened_observed_by_later_cas():
    ok([put(1, "k", "a", 0, 1, rev=2), cas(2, "k", "a", "m", 2, None),
        cas(3, "k", "m", "n", 5, 6, True, 4, ("m", 3))])


def test_delete_of_absent_key():
    ok([delete(1, "k", 0, 1, 0, 1, None), get(2, "k", 2, 3, None, 1)])


def test_independent_keys_partitioned():
    ok([put(1, "a", "1", 0, 1, rev=2), put(1, "b", "1", 0, 1, rev=3),
        get(2, "a", 2, 3, ("1", 2), 3), get(2, "b", 2, 3, ("1", 3), 3)])


# ---- anomalies ------------------------------------------------------------------------------

def test_flags_stale_read():
    bad([put(1, "k", "a", 0, 1, rev=2), put(1, "k", "b", 2, 3, rev=3, prev=("a", 2)),
         get(2, "k", 4, 5, ("a", 2), 3)])


def test_flags_stale_read_by_header_revision():
    # Value and mod_revision are current, but the header revision predates the write: served from
    # a member that had not applied it yet while claiming it had.
    bad([put(1, "k", "a", 0, 1, rev=5), get(2, "k", 2, 3, ("a", 5), 4)])


def test_flags_lost_write():
    # An acknowledged write that a later read never sees.
    bad([put(1, "k", "a", 0, 1, rev=2), put(2, "k", "b", 2, 3, rev=3, prev=("a", 2)),
         get(3, "k", 4, 5, ("a", 2), 4)])


def test_flags_lost_write_to_absent_key():
    bad([put(1, "k", "a", 0, 1, rev=2), get(2, "k", 2, 3, None, 2)])


def test_flags_read_going_back_in_time():
    bad([put(1, "k", "a", 0, 1, rev=2), put(2, "k", "b", 0, 10, rev=3, prev=("a", 2)),
         get(3, "k", 2, 3, ("b", 3), 3), get(3, "k", 4, 5, ("a", 2), 3)])


def test_flags_reordered_txn():
    # Both CAS from "a" claim success: at most one can have seen "a".
    bad([put(1, "k", "a", 0, 1, rev=2),
         cas(2, "k", "a", "x", 2, 6, True, 3, ("a", 2)),
         cas(3, "k", "a", "y", 2, 6, True, 4, ("a", 2))])


def test_flags_txn_applied_in_wrong_revision_order():
    # Sequential CAS chain whose revisions contradict real-time order.
    bad([put(1, "k", "a", 0, 1, rev=5),
         cas(2, "k", "a", "b", 2, 3, True, 4, ("a", 5))])


def test_flags_failed_cas_that_should_have_succeeded():
    bad([put(1, "k", "a", 0, 1, rev=2), cas(2, "k", "a", "b", 2, 3, False, 2, ("a", 2))])


def test_flags_wrong_prev_kv():
    bad([put(1, "k", "a", 0, 1, rev=2), put(2, "k", "b", 2, 3, rev=3, prev=None)])


def test_flags_phantom_value_from_maybe_before_call():
    # A maybe write cannot take effect before it was invoked.
    bad([put(1, "k", "a", 0, 1, rev=2), get(2, "k", 2, 3, ("late", 3), 3), put(3, "k", "late", 4, None)])


def test_flags_delete_not_seen():
    bad([put(1, "k", "a", 0, 1, rev=2), delete(1, "k", 2, 3, 1, 3, ("a", 2)), get(2, "k", 4, 5, ("a", 2), 3)])


def test_trace_written(tmp_path):
    res = bad([put(1, "k", "a", 0, 1, rev=2), put(1, "k", "b", 2, 3, rev=3, prev=("a", 2)),
               get(2, "k", 4, 5, ("a", 2), 3)])
    trace = res.violations[0].trace()
    (tmp_path / "trace.txt").write_text(trace)
    assert "cannot" in trace and "get" in trace


def test_history_roundtrip(tmp_path):
    h = History()
    for op in [put(1, "k", "a", 0, 1, rev=2), put(2, "k", "m", 1, None), get(2, "k", 2, 3, ("a", 2), 2)]:
        h.add(op)
    h.note("fault x")
    h.dump(str(tmp_path / "h.jsonl"))
    back = History.load(str(tmp_path / "h.jsonl"))
    assert len(back.ops) == 3 and back.notes[0][1] == "fault x"
    assert check_history(back.ops).ok


# ---- scale ----------------------------------------------------------------------------------

def simulate(n_clients: int, n_ops: int, seed: int, fail_rate: float = 0.02, key="k") -> list[Op]:
    """A linearizable random history of one key: a serial store with random latencies.

    Each op takes effect at a random instant inside its [call, ret] interval; failed writes take
    effect or not, and have no response.
    """
    rnd = random.Random(seed)
    events = []  # (effect_time, client, kind, call, ret, expect, value)
    clocks = [0.0] * n_clients
    for i in range(n_ops):
        c = rnd.randrange(n_clients)
        call = clocks[c] + rnd.random() * 0.01
        ret = call + rnd.random() * 0.05
        clocks[c] = ret
        kind = rnd.choice([PUT, PUT, GET, GET, GET, DELETE, CAS])
        effect = rnd.uniform(call, ret)
        events.append((effect, c, kind, call, ret, i))
    events.sort()
    value, mod, rev = None, 0, 1
    ops = []
    for effect, c, kind, call, ret, i in events:
        v = f"v{i}"
        failed = kind != GET and rnd.random() < fail_rate
        happens = not failed or rnd.random() < 0.5
        if kind == GET:
            ops.append(get(c, key, call, ret, None if value is None else (value, mod), rev))
        elif kind == PUT:
            prev = None if value is None else (value, mod)
            if happens:
                rev += 1
                value, mod = v, rev
            ops.append(put(c, key, v, call, ret, rev=None if failed else rev, prev=prev))
        elif kind == DELETE:
            prev = None if value is None else (value, mod)
            if failed:
                if happens and value is not None:
                    rev += 1
                    value, mod = None, rev
                ops.append(Op(c, DELETE, key, {}, call, INF, None))
            elif value is None:
                ops.append(delete(c, key, call, ret, 0, rev, None))
            else:
                rev += 1
                value, mod = None, rev
                ops.append(delete(c, key, call, ret, 1, rev, prev))
        else:
            expect = value if rnd.random() < 0.7 else "nope"
            prev = None if value is None else (value, mod)
            holds = expect == value
            if holds and happens:
                rev += 1
                value, mod = v, rev
            if failed:
                ops.append(cas(c, key, expect, v, call, ret))
            else:
                ops.append(cas(c, key, expect, v, call, ret, holds, rev, prev if not holds else prev))
    return ops


def test_random_valid_histories_pass():
    for seed in range(30):
        ok(simulate(6, 200, seed))


def test_random_histories_with_a_mutation_are_flagged_or_still_valid():
    # Replace a read's result with the value before the latest write seen by a later read:
    # the checker must flag it whenever that read strictly follows the write it misses.
    flagged = 0
    for seed in range(30):
        ops = simulate(4, 120, seed, fail_rate=0.0)
        puts = [o for o in ops if o.kind == PUT and o.output["prev"] is not None]
        reads = [o for o in ops if o.kind == GET]
        for p in puts:
            later = [r for r in reads if r.call > p.ret]
            if later:
                r = later[0]
                r.output = {"kv": p.output["prev"], "rev": r.output["rev"]}
                assert not check_history(ops).ok
                flagged += 1
                break
    assert flagged > 10


def test_thousands_of_ops_per_key_with_16_clients():
    ops = simulate(16, 3000, seed=7, fail_rate=0.01)
    t0 = time.monotonic()
    res = ok(ops)
    elapsed = time.monotonic() - t0
    assert res.ops_checked > 2900
    assert elapsed < 30, elapsed


def test_flags_observed_maybe_write_then_reverted():
    # A failed put is seen by one read, a strictly later read sees the old value again.
    bad([put(1, "k", "a", 0, 1, rev=2), put(2, "k", "m", 2, None),
         get(3, "k", 3, 4, ("m", 3), 3), get(3, "k", 5, 6, ("a", 2), 3)])


def test_many_failed_writes_stay_tractable():
    ops = simulate(16, 2000, seed=11, fail_rate=0.05)
    t0 = time.monotonic()
    ok(ops)
    assert time.monotonic() - t0 < 30


def test_revision_order_flags_cross_key_stale_read():
    from tests.robustness.linearizability import check_revision_order
    ops = [put(1, "a", "1", 0, 1, rev=7), get(2, "b", 2, 3, None, 5)]
    assert check_history(ops).ok  # each key alone is fine
    assert check_revision_order(ops)
    ops = [put(1, "a", "1", 0, 1, rev=7), get(2, "b", 0.5, 3, None, 5), get(2, "b", 4, 5, None, 7)]
    assert check_revision_order(ops) == []
