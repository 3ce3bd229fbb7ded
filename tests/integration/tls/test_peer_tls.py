"""Peer links over TLS (https:// peer URLs, --peer-cert-file/--peer-key-file/
--peer-trusted-ca-file/--peer-client-cert-auth): a 3-member cluster replicates over them (ours
and etcd 3.4.23 with the same flags), and a member whose certificate comes from another CA gets
no peer traffic through, in either direction."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.launch import KVCLUSTER, ClusterSpec, port_open, wait_until
from tests.support.etcd_ref import start_etcd_cluster
from tests.support.kvstack import start_kv_cluster

from .conftest import etcdctl


def peer_tls_flags(ca, issued) -> list[str]:
    return ["--peer-cert-file", issued.cert, "--peer-key-file", issued.key,
            "--peer-trusted-ca-file", ca.cert, "--peer-client-cert-auth"]


def received_from(metrics_url: str) -> dict[str, float]:
    """etcd_network_peer_received_bytes_total by sender, from a member's /metrics."""
    with urllib.request.urlopen(metrics_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {s.labels["From"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "etcd_network_peer_received_bytes" for s in f.samples
            if s.name.endswith("_total")}


@pytest.mark.parametrize("impl", ["kvcluster", "etcd"])
def test_three_members_replicate_over_peer_tls(impl, procs, tmp_path, pki):
    spec = ClusterSpec.allocate(str(tmp_path), 3, peer_tls_flags(pki.ca, pki.server), peer_scheme="https")
    (start_kv_cluster if impl == "kvcluster" else start_etcd_cluster)(procs, spec)
    m1, m2, m3 = spec.members
    assert all(m.peer_url.startswith("https://") for m in spec.members)

    put = etcdctl(m1.client_url, "put", "over-tls", "v1")
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    for m in (m2, m3):
        wait_until(lambda m=m: etcdctl(m.client_url, "get", "over-tls", "--consistency=s",
                                       "--print-value-only").stdout.strip() == "v1",
                   60, f"{m.name} applies the write")
    linearizable = etcdctl(m3.client_url, "get", "over-tls", "--print-value-only")
    assert linearizable.stdout.strip() == "v1", linearizable.stderr
    # Keepalives on followers travel to the leader over a peer TLS call (at least one of m2, m3
    # is a follower).
    grant = etcdctl(m1.client_url, "lease", "grant", "60")
    assert grant.returncode == 0, grant.stderr
    lease_id = grant.stdout.split()[1]
    for m in (m2, m3):
        kept = etcdctl(m.client_url, "lease", "keep-alive", "--once", lease_id)
        assert kept.returncode == 0 and "keepalived with TTL(60)" in kept.stdout, kept.stderr
    members = etcdctl(m2.client_url, "member", "list")
    assert members.returncode == 0 and members.stdout.count("https://127.0.0.1:") == 3, members.stdout
    # The leader hears from both followers, over TLS (followers only talk to the leader).
    wait_until(lambda: any(len([v for v in received_from(m.metrics_url).values() if v > 0]) == 2
                           for m in spec.members), 60, "the leader hears from both followers")


def test_member_with_a_certificate_from_another_ca_gets_no_peer_traffic(procs, tmp_path, pki):
    spec = ClusterSpec.allocate(str(tmp_path), 3, [*peer_tls_flags(pki.ca, pki.server), "--log-level", "info"],
                                peer_scheme="https")
    m1, m2, m3 = spec.members
    procs.start("kv-m3", [*KVCLUSTER, *spec.argv(m3), *peer_tls_flags(pki.other, pki.other_server)])
    for m in (m1, m2):
        procs.start(f"kv-{m.name}", [*KVCLUSTER, *spec.argv(m)])
    for m in (m1, m2):
        wait_until(lambda m=m: port_open(m.client_port), 60,
                   f"{m.name} serves clients\n{procs.log_tail('kv-' + m.name)}")

    put = etcdctl(m1.client_url, "put", "k", "v")
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    wait_until(lambda: etcdctl(m2.client_url, "get", "k", "--consistency=s", "--print-value-only")
               .stdout.strip() == "v", 60, "m2 applies the write")
    # m1 and m2 (one of them the leader) hear from each other only: m3's handshakes fail both
    # ways (each side refuses the other's certificate), so it never learns of a leader and never
    # serves clients.
    wait_until(lambda: all(len([v for v in received_from(m.metrics_url).values() if v > 0]) == 1
                           for m in (m1, m2)), 60, "peer traffic between m1 and m2")
    for m in (m1, m2):
        assert len([v for v in received_from(m.metrics_url).values() if v > 0]) == 1
    assert not port_open(m3.client_port), procs.log_tail("kv-m3")
    assert procs.procs["kv-m3"].poll() is None  # still running, still refused
