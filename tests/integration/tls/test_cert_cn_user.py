"""--client-cert-auth with auth enabled: the client certificate's CN names the user, as in etcd.

The same script runs against our member and etcd 3.4.23: a certificate with CN=root administers,
one with CN=alice gets alice's permissions (read pub/ only) without --user or a password.
"""

from __future__ import annotations

import pytest

from cluster.launch import ClusterSpec

from .conftest import etcdctl
from .test_member_tls import client_tls_flags, start

DENIED = "Error: etcdserver: permission denied"


@pytest.mark.parametrize("impl", ["kvcluster", "etcd"])
def test_certificate_common_name_is_the_user(impl, procs, tmp_path, pki):
    alice_cert = pki.ca.issue(f"alice-{impl}", server=False)
    alice = alice_cert.cn
    spec = ClusterSpec.allocate(str(tmp_path), 1, client_tls_flags(pki), client_scheme="https")
    url = start(impl, procs, spec).members[0].client_url

    def ctl(cert, *args):
        return etcdctl(url, *args, cacert=pki.ca.cert, cert=cert)

    for args in (["user", "add", "root:rootpw"], ["role", "add", "reader"],
                 ["role", "grant-permission", "reader", "read", "pub/", "--prefix"],
                 ["user", "add", f"{alice}:alicepw"], ["user", "grant-role", alice, "reader"],
                 ["put", "pub/a", "1"], ["put", "priv/b", "2"], ["auth", "enable"]):
        done = ctl(pki.client, *args)
        assert done.returncode == 0, (args, done.stderr)

    # CN=alice reads what alice may read, and nothing else, with no token or password.
    got = ctl(alice_cert, "get", "pub/a")
    assert (got.returncode, got.stdout.split()) == (0, ["pub/a", "1"]), got.stderr
    for args in (["get", "priv/b"], ["put", "pub/a", "x"], ["user", "list"]):
        denied = ctl(alice_cert, *args)
        assert denied.returncode == 1 and DENIED in denied.stderr, (args, denied.stdout, denied.stderr)

    # CN=root is root: it reads everything and manages auth.
    got = ctl(pki.client, "get", "priv/b")
    assert (got.returncode, got.stdout.split()) == (0, ["priv/b", "2"]), got.stderr
    users = ctl(pki.client, "user", "list")
    assert users.returncode == 0 and sorted(users.stdout.split()) == sorted([alice, "root"]), users.stderr

    # A password still works beside the certificate, and a wrong one is refused.
    bad = ctl(alice_cert, "get", "pub/a", f"--user={alice}:wrong")
    assert bad.returncode == 2  # etcdctl exits 2 when the client cannot authenticate
    assert "authentication failed, invalid user ID or password" in bad.stderr, bad.stderr
