"""TLS on both sides: kvproxy --cert/--key/--cacert to an etcd 3.4.23 that requires client
certificates, and --cert-file/--key-file towards etcdctl."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.etcd_ref import ETCD_BIN, ETCDCTL_BIN
from tests.support.kvstack import start_kvproxy
from cluster.launch import free_port, port_open, wait_until


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path):
    """A CA and one certificate for 127.0.0.1 usable by servers and clients."""
    d = tmp_path / "certs"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "1", "-subj", "/CN=kvstack-test-ca", cwd=d)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "node.key", "-out", "node.csr",
            "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "node.crt", "-days", "1", "-extfile", "ext.cnf", cwd=d)
    return {name: str(d / name) for name in ("ca.crt", "node.crt", "node.key")}


class TLSUpstream:
    def __init__(self, port: int):
        self.endpoints = f"https://127.0.0.1:{port}"


def test_tls_to_the_cluster_and_to_clients(procs, tmp_path, certs):
    port, peer = free_port(), free_port()
    procs.start("etcd-tls", [
        ETCD_BIN, "--name", "t1", "--data-dir", str(tmp_path / "t1.data"),
        "--listen-client-urls", f"https://127.0.0.1:{port}", "--advertise-client-urls", f"https://127.0.0.1:{port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"t1=http://127.0.0.1:{peer}",
        "--cert-file", certs["node.crt"], "--key-file", certs["node.key"],
        "--trusted-ca-file", certs["ca.crt"], "--client-cert-auth"])
    wait_until(lambda: port_open(port), 30, "etcd with TLS")
    proxy = start_kvproxy(procs, TLSUpstream(port), extra_flags=[
        "--cert", certs["node.crt"], "--key", certs["node.key"], "--cacert", certs["ca.crt"],
        "--cert-file", certs["node.crt"], "--key-file", certs["node.key"]])

    def etcdctl(*args, tls=True):
        flags = [f"--endpoints=https://127.0.0.1:{proxy.port}"]
        if tls:
            flags.append(f"--cacert={certs['ca.crt']}")
        else:
            flags = [f"--endpoints=127.0.0.1:{proxy.port}", "--dial-timeout=1s", "--command-timeout=2s"]
        return subprocess.run([ETCDCTL_BIN, *flags, *args], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "ETCDCTL_API": "3"})

    put = etcdctl("put", "tls-key", "tls-value")
    assert put.returncode == 0, put.stderr
    assert etcdctl("get", "tls-key", "--consistency=s").stdout.split() == ["tls-key", "tls-value"]
    assert etcdctl("get", "tls-key").stdout.split() == ["tls-key", "tls-value"]
    assert etcdctl("endpoint", "status").returncode == 0
    assert etcdctl("get", "tls-key", tls=False).returncode != 0  # plaintext is refused
