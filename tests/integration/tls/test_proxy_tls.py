"""kvproxy between TLS clients and a TLS kvcluster: --cert/--key/--cacert towards a member with
--client-cert-auth, and --cert-file/--key-file/--trusted-ca-file towards etcdctl (which, as
etcd grpc-proxy 3.4.23 does, then must present a certificate from that CA); https:// metrics
URLs use the client-facing files."""

from __future__ import annotations

import ssl
import urllib.error

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.launch import ClusterSpec, LOOPBACK, free_port, port_open, wait_until
from tests.support.etcd_ref import ETCD_BIN
from tests.support.kvstack import start_kv_cluster, start_kvproxy

from .conftest import etcdctl, https_get

REFUSED = ("--dial-timeout=2s", "--command-timeout=4s")


class Upstream:
    def __init__(self, spec: ClusterSpec):
        self.endpoints = ",".join(m.client_url for m in spec.members)


def coherent(metrics: str, pki) -> bool:
    try:
        _, body = https_get(metrics + "/metrics", pki.ca.cert, pki.client)
    except (OSError, ssl.SSLError):
        return False
    return any(s.value == 1 for f in text_string_to_metric_families(body.decode())
               if f.name == "kvproxy_cache_coherent" for s in f.samples)


@pytest.fixture
def tls_member(procs, tmp_path, pki) -> ClusterSpec:
    spec = ClusterSpec.allocate(str(tmp_path), 1, [
        "--cert-file", pki.server.cert, "--key-file", pki.server.key, "--trusted-ca-file", pki.ca.cert,
        "--client-cert-auth"], client_scheme="https")
    return start_kv_cluster(procs, spec)


def test_proxy_between_tls_clients_and_a_tls_cluster(procs, tls_member, pki):
    metrics = f"https://{LOOPBACK}:{free_port()}"
    proxy = start_kvproxy(procs, Upstream(tls_member), extra_flags=[
        "--cert", pki.client.cert, "--key", pki.client.key, "--cacert", pki.ca.cert,
        "--cert-file", pki.server.cert, "--key-file", pki.server.key, "--trusted-ca-file", pki.ca.cert,
        "--metrics-addr", metrics])
    # The cache's keyspace watch runs over the upstream TLS link.
    wait_until(lambda: coherent(metrics, pki), 60, "the proxy's cache watch over TLS")
    url = f"https://{proxy.listen_addr}"

    put = etcdctl(url, "put", "via-proxy", "v1", cacert=pki.ca.cert, cert=pki.client)
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    for consistency in ("s", "l"):
        got = etcdctl(url, "get", "via-proxy", f"--consistency={consistency}", cacert=pki.ca.cert, cert=pki.client)
        assert got.stdout.split() == ["via-proxy", "v1"], got.stderr
    lease = etcdctl(url, "lease", "grant", "60", cacert=pki.ca.cert, cert=pki.client)
    assert lease.returncode == 0 and "granted with TTL(60s)" in lease.stdout, lease.stderr
    direct = etcdctl(tls_member.members[0].client_url, "get", "via-proxy", "--print-value-only",
                     cacert=pki.ca.cert, cert=pki.client)
    assert direct.stdout.strip() == "v1", direct.stderr

    no_cert = etcdctl(url, "get", "via-proxy", cacert=pki.ca.cert, extra=REFUSED)
    other_cert = etcdctl(url, "get", "via-proxy", cacert=pki.ca.cert, cert=pki.other_client, extra=REFUSED)
    wrong_ca = etcdctl(url, "get", "via-proxy", cacert=pki.other.cert, cert=pki.client, extra=REFUSED)
    for refused in (no_cert, other_cert, wrong_ca):
        assert refused.returncode == 1 and "Error: context deadline exceeded" in refused.stderr

    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        https_get(metrics + "/health", pki.ca.cert)  # the metrics port wants a client certificate too
    assert https_get(metrics + "/health", pki.ca.cert, pki.client)[0] == 200


def test_proxy_without_an_upstream_client_certificate_is_refused_by_the_cluster(procs, tls_member, pki):
    proxy = start_kvproxy(procs, Upstream(tls_member), extra_flags=["--cacert", pki.ca.cert])
    got = etcdctl(proxy.listen_addr, "get", "k", extra=REFUSED)
    assert got.returncode == 1, got.stdout
    assert "Error:" in got.stderr


@pytest.mark.parametrize("impl", ["kvproxy", "etcd grpc-proxy"])
def test_proxy_auto_tls(impl, procs, tmp_path):
    """--auto-tls: a self-signed certificate under <data-dir>/fixtures/proxy, served to clients."""
    upstream = start_kv_cluster(procs, ClusterSpec.allocate(str(tmp_path), 1))
    data_dir = str(tmp_path / "proxy.data")
    flags = ["--auto-tls", "--data-dir", data_dir]
    if impl == "kvproxy":
        addr = start_kvproxy(procs, upstream, extra_flags=flags).listen_addr
    else:
        addr = f"{LOOPBACK}:{free_port()}"
        procs.start("grpc-proxy", [ETCD_BIN, "grpc-proxy", "start", "--endpoints", upstream.endpoints,
                                   "--listen-addr", addr, *flags], env={"ETCD_UNSUPPORTED_ARCH": ""})
        wait_until(lambda: port_open(int(addr.rsplit(":", 1)[1])), 30, "etcd grpc-proxy")
    assert (tmp_path / "proxy.data" / "fixtures" / "proxy" / "cert.pem").is_file()
    url = f"https://{addr}"
    put = etcdctl(url, "put", "k", "v", extra=("--insecure-transport=false", "--insecure-skip-tls-verify"))
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    verified = etcdctl(url, "get", "k", extra=REFUSED)  # system roots: not trusted
    assert verified.returncode == 1
