"""TLS on a member's client side, checked against etcd 3.4.23 started with the same flags and
certificates: etcdctl with the right CA and client certificate works; a wrong CA, a missing
client certificate (with --client-cert-auth) or one from an unrelated CA are refused the same
way; https:// metrics URLs use the client TLS files; https:// URLs without certificates are
refused at start with etcd's message; --auto-tls serves a self-signed certificate."""

from __future__ import annotations

import os
import ssl
import subprocess
import urllib.error

import pytest

from cluster.launch import KVCLUSTER, ClusterSpec, free_port, wait_until
from tests.support.etcd_ref import ETCD_BIN, start_etcd_cluster
from tests.support.kvstack import start_kv_cluster

from .conftest import etcdctl, https_get

REFUSED = ("--dial-timeout=2s", "--command-timeout=4s")  # failures take the whole timeout


def client_tls_flags(pki, *, client_cert_auth: bool = True) -> list[str]:
    return ["--cert-file", pki.server.cert, "--key-file", pki.server.key,
            "--trusted-ca-file", pki.ca.cert, *(["--client-cert-auth"] if client_cert_auth else [])]


def start(impl: str, procs, spec: ClusterSpec) -> ClusterSpec:
    return (start_kv_cluster if impl == "kvcluster" else start_etcd_cluster)(procs, spec)


@pytest.mark.parametrize("impl", ["kvcluster", "etcd"])
def test_client_cert_auth_with_etcdctl(impl, procs, tmp_path, pki):
    spec = ClusterSpec.allocate(str(tmp_path), 1, client_tls_flags(pki), client_scheme="https")
    member = start(impl, procs, spec).members[0]
    url = member.client_url

    put = etcdctl(url, "put", "tls-key", "v1", cacert=pki.ca.cert, cert=pki.client)
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    got = etcdctl(url, "get", "tls-key", cacert=pki.ca.cert, cert=pki.client)
    assert got.stdout.split() == ["tls-key", "v1"], got.stderr

    # The server's certificate does not chain to the CA etcdctl trusts.
    wrong_ca = etcdctl(url, "get", "tls-key", cacert=pki.other.cert, cert=pki.client, extra=REFUSED)
    # No client certificate, or one from a CA the server does not trust.
    no_cert = etcdctl(url, "get", "tls-key", cacert=pki.ca.cert, extra=REFUSED)
    other_cert = etcdctl(url, "get", "tls-key", cacert=pki.ca.cert, cert=pki.other_client, extra=REFUSED)
    for refused in (wrong_ca, no_cert, other_cert):
        assert refused.returncode == 1
        assert refused.stdout == ""
        assert "Error: context deadline exceeded" in refused.stderr

    # Plaintext to a TLS port fails too.
    plain = etcdctl(f"http://127.0.0.1:{member.client_port}", "get", "tls-key", extra=REFUSED)
    assert plain.returncode == 1


@pytest.mark.parametrize("impl", ["kvcluster", "etcd"])
def test_trusted_ca_file_alone_requires_client_certificates(impl, procs, tmp_path, pki):
    """etcd 3.4 requires and verifies client certificates as soon as --trusted-ca-file is set,
    with or without --client-cert-auth."""
    spec = ClusterSpec.allocate(str(tmp_path), 1, client_tls_flags(pki, client_cert_auth=False),
                                client_scheme="https")
    url = start(impl, procs, spec).members[0].client_url
    put = etcdctl(url, "put", "k", "v", cacert=pki.ca.cert, cert=pki.client)
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    refused = etcdctl(url, "get", "k", cacert=pki.ca.cert, extra=REFUSED)
    assert refused.returncode == 1 and "Error: context deadline exceeded" in refused.stderr


@pytest.mark.parametrize("impl", ["kvcluster", "etcd"])
def test_tls_without_a_trusted_ca_accepts_any_client(impl, procs, tmp_path, pki):
    spec = ClusterSpec.allocate(str(tmp_path), 1, ["--cert-file", pki.server.cert, "--key-file", pki.server.key],
                                client_scheme="https")
    url = start(impl, procs, spec).members[0].client_url
    put = etcdctl(url, "put", "k", "v", cacert=pki.ca.cert)
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    other = etcdctl(url, "get", "k", "--print-value-only", cacert=pki.ca.cert, cert=pki.other_client)
    assert other.stdout.strip() == "v", other.stderr


@pytest.mark.parametrize("impl", ["kvcluster", "etcd"])
def test_https_metrics_url_uses_the_client_tls_files(impl, procs, tmp_path, pki):
    metrics_port = free_port()
    metrics = f"https://127.0.0.1:{metrics_port}"
    spec = ClusterSpec.allocate(str(tmp_path), 1, [*client_tls_flags(pki), "--listen-metrics-urls", metrics],
                                client_scheme="https")
    start(impl, procs, spec)

    def healthy() -> bool:
        try:
            return https_get(metrics + "/health", pki.ca.cert, pki.client)[0] == 200
        except (OSError, ssl.SSLError):
            return False

    wait_until(healthy, 30, f"{impl} https /health")
    status, body = https_get(metrics + "/metrics", pki.ca.cert, pki.client)
    assert status == 200 and b"etcd_server_has_leader 1" in body
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        https_get(metrics + "/health", pki.ca.cert)  # --client-cert-auth: no certificate, no answer


def _refusal(impl: str, tmp_path, flags: list[str]) -> str:
    """Start `impl` with `flags`, expect it to exit at once; its output."""
    peer = f"http://127.0.0.1:{free_port()}"
    base = ["--name", "m1", "--data-dir", str(tmp_path / f"{impl}.data"),
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"m1={peer}"]
    argv = [*KVCLUSTER, *base, *flags] if impl == "kvcluster" else [ETCD_BIN, *base, *flags]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ETCD_UNSUPPORTED_ARCH": ""})
    assert done.returncode != 0, done.stderr
    return done.stdout + done.stderr


def test_https_urls_without_certificates_are_refused_like_etcd(tmp_path):
    client = f"https://127.0.0.1:{free_port()}"
    want = (f"TLS key/cert (--cert-file, --key-file) must be provided for client url {client} "
            "with HTTPS scheme")
    for impl in ("kvcluster", "etcd"):
        out = _refusal(impl, tmp_path, ["--listen-client-urls", client, "--advertise-client-urls", client])
        assert want in out, (impl, out)

    port = free_port()
    peer = f"https://127.0.0.1:{port}"
    flags = ["--listen-client-urls", f"http://127.0.0.1:{free_port()}",
             "--advertise-client-urls", "http://127.0.0.1:2379", "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", f"m1={peer}"]
    want = f"cannot listen on TLS for 127.0.0.1:{port}: KeyFile and CertFile are not presented"
    for impl in ("kvcluster", "etcd"):
        out = _refusal(impl, tmp_path, flags)
        assert want in out, (impl, out)


def test_missing_certificate_file_is_refused_like_etcd(tmp_path, pki):
    client = f"https://127.0.0.1:{free_port()}"
    missing = str(tmp_path / "missing.pem")
    for impl in ("kvcluster", "etcd"):
        out = _refusal(impl, tmp_path, ["--listen-client-urls", client, "--advertise-client-urls", client,
                                        "--cert-file", missing, "--key-file", pki.server.key])
        assert f"open {missing}: no such file or directory" in out, (impl, out)


@pytest.mark.parametrize("impl", ["kvcluster", "etcd"])
def test_auto_tls_serves_a_self_signed_certificate(impl, procs, tmp_path):
    spec = ClusterSpec.allocate(str(tmp_path), 1, ["--auto-tls"], client_scheme="https")
    member = start(impl, procs, spec).members[0]
    assert os.path.isfile(os.path.join(member.data_dir, "fixtures", "client", "cert.pem"))
    put = etcdctl(member.client_url, "put", "k", "v",
                  extra=("--insecure-transport=false", "--insecure-skip-tls-verify"))
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    verified = etcdctl(member.client_url, "get", "k", extra=REFUSED)  # system roots: not trusted
    assert verified.returncode == 1
