"""Network blackhole of one member (follower, then leader), against etcd 3.4.23 and our cluster.

Members run in their own network namespaces (see netns.py); the fault sets a member's veth down.
Used: network namespaces + link down (no netem/iptables in this sandbox, so no delay/drop yet).
"""

from __future__ import annotations

import os
import random

import pytest

from cluster.launch import wait_until
from tests.robustness.faults import BLACKHOLE_CASES, Stack
from tests.robustness.netns import NetnsNetwork, netns_available
from tests.robustness.test_robustness_etcd import run_rounds



def test_netns_available():
    """Network faults need root and `ip netns`; fail loudly instead of skipping when missing."""
    assert netns_available()


@pytest.mark.parametrize("kind", ["etcd", "kv"])
def test_blackhole_one_member(kind, procs, tmp_path):
    net = NetnsNetwork(str(tmp_path), 3)
    try:
        stack = Stack(procs, net.spec, kind, network=net)
        for m in net.spec.members:
            stack.start(m)
        for m in net.spec.members:
            wait_until(lambda m=m: stack.serving(m), 30, f"{kind} {m.name} serving\n{procs.log_tail(stack.pname(m))}")
        seed = int(os.environ.get("ROBUSTNESS_SEED", random.randrange(1 << 20)))
        print("\nnetwork faults: network namespaces, veth link down (blackhole)")
        reports, text = run_rounds(stack, tmp_path, f"{kind} blackhole (netns), seed {seed}", BLACKHOLE_CASES, seed)
        assert all(r.ops_checked > 100 for r in reports), text
        assert sum(r.n_violations for r in reports) == 0, f"{text}\nkept in {tmp_path}"
    finally:
        procs.close()
        net.close()
