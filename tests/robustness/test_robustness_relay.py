"""Peer-link faults (blackhole, delay ± jitter, 50% drop) on one follower, the leader and a quorum,
through the fault-injecting TCP relay, against etcd 3.4.23 (calibration) and our cluster.

Mechanism: this sandbox has network namespaces but no netem qdisc and no iptables (checked by
`test_netem_unavailable_so_the_relay_is_used`), so delay and drop come from relay.py; blackhole
through the relay too (the netns link-down blackhole is in test_robustness_net.py).
"""

from __future__ import annotations

import os
import random
import subprocess

import pytest

from cluster.launch import wait_until
from tests.robustness.faults import LINK_CASES
from tests.robustness.relayed import link_name, start_relayed_stack
from tests.robustness.test_robustness_etcd import run_rounds


def netem_works() -> bool:
    """Can a netns get a netem qdisc on its loopback (tc qdisc add dev lo root netem delay)?"""
    ns = f"rbnetem{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        return False
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], capture_output=True)
        r = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                            "delay", "10ms"], capture_output=True)
        return r.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_netem_unavailable_so_the_relay_is_used():
    """If netem ever works here, netem should carry delay/drop and this relay become the fallback:
    this test then fails to say so."""
    assert not netem_works(), "netem works on this machine: use it for delay/drop (docs/robustness.md)"


@pytest.mark.parametrize("kind", ["etcd", "kv"])
def test_peer_link_faults(kind, procs, tmp_path):
    seed = int(os.environ.get("ROBUSTNESS_SEED", random.randrange(1 << 20)))
    stack = start_relayed_stack(procs, str(tmp_path), kind, seed)
    try:
        print("\nnetwork faults: fault-injecting TCP relay on the peer links (no netem/iptables here)")
        # Every ordered pair of members has a relayed connection attributed to its dialer.
        pairs = {(link_name(a), link_name(b)) for a in stack.spec.members for b in stack.spec.members if a is not b}
        wait_until(lambda: pairs <= set(stack.relay.links()), 30, f"peer links through the relay: {stack.relay.links()}")
        reports, text = run_rounds(stack, tmp_path, f"{kind} peer-link faults (relay), seed {seed}",
                                   LINK_CASES, seed, warmup=1.0, after=1.0)
        assert stack.relay.connections > 0
        assert all(r.ops_checked > 50 for r in reports), text
        assert sum(r.n_violations for r in reports) == 0, f"{text}\nkept in {tmp_path}"
    finally:
        procs.close()
        stack.relay.close()
