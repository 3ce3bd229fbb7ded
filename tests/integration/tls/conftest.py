"""Fixtures for the TLS tests: certificates (tests/support/certs.py) and TLS-aware helpers."""

from __future__ import annotations

import os
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass

import pytest

from tests.support.certs import CertificateAuthority, Issued
from tests.support.etcd_ref import ETCDCTL_BIN


@dataclass(frozen=True)
class PKI:
    """Two unrelated CAs and what they issued: `ca` is trusted by the servers under test, `other`
    is not. `server` serves loopback (both usages: members use it to dial peers too)."""

    ca: CertificateAuthority
    server: Issued
    client: Issued  # CN=root
    other: CertificateAuthority
    other_server: Issued
    other_client: Issued  # CN=root, from the untrusted CA


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    base = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create(base / "ca", "kvstack test CA")
    other = CertificateAuthority.create(base / "other", "unrelated CA")
    return PKI(ca, ca.issue("server"), ca.issue("root", server=False),
               other, other.issue("server"), other.issue("root", server=False))


def etcdctl(endpoint: str, *args: str, cacert: str | None = None, cert: Issued | None = None,
            extra: tuple[str, ...] = (), timeout: float = 60) -> subprocess.CompletedProcess:
    """etcdctl 3.4 against `endpoint` with --cacert and, when `cert`, --cert/--key."""
    flags = [f"--endpoints={endpoint}", "--dial-timeout=5s", "--command-timeout=10s", *extra]
    if cacert:
        flags.append(f"--cacert={cacert}")
    if cert is not None:
        flags += [f"--cert={cert.cert}", f"--key={cert.key}"]
    return subprocess.run([ETCDCTL_BIN, *flags, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ETCDCTL_API": "3"})


def https_get(url: str, cacert: str, cert: Issued | None = None) -> tuple[int, bytes]:
    """GET `url` over TLS, verifying the server with `cacert` and presenting `cert`."""
    ctx = ssl.create_default_context(cafile=cacert)
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        return r.status, r.read()
