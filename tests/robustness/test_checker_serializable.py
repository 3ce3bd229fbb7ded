"""Serializable-read sanity check, on hand-built ops and on a recorded proxy history (replay)."""

from __future__ import annotations

import os

from tests.robustness.history import GET, PUT, SGET, History, Op
from tests.robustness.linearizability import check_history
from tests.robustness.rounds import serializable_sanity

FINDINGS = os.path.join(os.path.dirname(__file__), "findings")


def sget(c, key, call, kv, rev, conn=0):
    return Op(c, SGET, key, {}, call, call + 0.01, {"kv": kv, "rev": rev, "endpoint": "e", "conn": conn})


PUTS = [Op(1, PUT, "k", {"value": "a"}, 0, 0.1, {"rev": 5, "prev": None})]


def test_monotonic_reads_pass():
    assert serializable_sanity([*PUTS, sget(2, "k", 1, ("a", 5), 6), sget(2, "k", 2, ("a", 5), 7)]) == []


def test_revision_going_back_on_one_connection_flagged():
    assert any("went back" in p for p in
               serializable_sanity([*PUTS, sget(2, "k", 1, ("a", 5), 7), sget(2, "k", 2, ("a", 5), 6)]))


def test_revision_going_back_after_reconnect_allowed():
    assert serializable_sanity([*PUTS, sget(2, "k", 1, ("a", 5), 7), sget(2, "k", 2, ("a", 5), 6, conn=1)]) == []


def test_phantom_value_flagged():
    assert any("no write produced" in p for p in serializable_sanity([*PUTS, sget(2, "k", 1, ("zz", 5), 6)]))
    assert any("newer than its header" in p for p in serializable_sanity([*PUTS, sget(2, "k", 1, ("a", 5), 4)]))


def test_recorded_proxy_finding_replays():
    """kvproxy -> kvcluster, seed 955511, round 2 (leader SIGKILL behind the proxy): one client on
    one connection got a serializable read at header revision 610, then one at 609 (cached). The
    linearizable part of the same history is fine."""
    h = History.load(os.path.join(FINDINGS, "proxy-serializable-revision-back-seed955511-round2.jsonl.gz"))
    problems = serializable_sanity(h.ops)
    assert any("went back from revision 610 to 609" in p for p in problems), problems
    assert check_history(h.ops).ok
