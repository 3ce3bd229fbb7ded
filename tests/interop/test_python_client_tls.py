"""The etcd3 Python client over TLS with a client certificate (--client-cert-auth), against
etcd 3.4.23 and against kvcluster started with the same flags and certificates. (aetcd 1.0.0
has no TLS options.)"""

import json
import os
import subprocess

import pytest

from cluster.launch import ClusterSpec
from tests.support.certs import CertificateAuthority
from tests.support.etcd_ref import start_etcd_cluster
from tests.support.kvstack import start_kv_cluster

CLIENTS_DIR = os.path.join(os.path.dirname(__file__), "clients")


@pytest.mark.parametrize("impl", ["etcd", "kvcluster"])
def test_etcd3_client_over_tls(impl, client_venvs, procs, tmp_path):
    ca = CertificateAuthority.create(tmp_path / "ca", "kvstack test CA")
    server, client = ca.issue("server"), ca.issue("root", server=False)
    spec = ClusterSpec.allocate(str(tmp_path), 1, [
        "--cert-file", server.cert, "--key-file", server.key, "--trusted-ca-file", ca.cert,
        "--client-cert-auth"], client_scheme="https")
    (start_kv_cluster if impl == "kvcluster" else start_etcd_cluster)(procs, spec)
    run = subprocess.run([os.path.join(client_venvs, "etcd3", "bin", "python"),
                          os.path.join(CLIENTS_DIR, "etcd3_tls.py"), spec.endpoints, ca.cert,
                          client.cert, client.key, "tls/"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "get": ["1", 1],
        "prefix": [["tls/a", "1"], ["tls/b", "2"], ["tls/leased", "v"], ["tls/w", "x"]],
        "watch": ["PutEvent", "tls/w", "x"],
        "lease_ttl": 30,
    }
