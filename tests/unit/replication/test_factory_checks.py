"""The flag checks a member runs before bootstrapping (etcd's messages)."""

from __future__ import annotations

import pytest

from cluster.replication.errors import BootstrapError
from cluster.replication.factory import check_flags
from cluster.server.member import MemberConfig

A, B = "http://127.0.0.1:2380", "http://127.0.0.1:2480"


def config(**kw) -> MemberConfig:
    base = dict(name="a", initial_cluster=f"a={A},b={B}", initial_advertise_peer_urls=[A])
    return MemberConfig(**{**base, **kw})


def test_a_consistent_configuration_passes():
    check_flags(config())
    check_flags(config(initial_cluster_state="existing"))  # joining a running cluster


@pytest.mark.parametrize("kw, message", [
    (dict(name="c"), "couldn't find local name 'c' in the initial cluster configuration"),
    (dict(initial_advertise_peer_urls=["http://127.0.0.1:9"]),
     "--initial-cluster has a=http://127.0.0.1:2380 but --initial-advertise-peer-urls is"),
    (dict(heartbeat_interval_ms=300, election_timeout_ms=1000),
     "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"),
])
def test_inconsistent_flags_are_refused_with_a_message_naming_them(kw, message):
    with pytest.raises(BootstrapError) as exc:
        check_flags(config(**kw))
    assert message in str(exc.value)
