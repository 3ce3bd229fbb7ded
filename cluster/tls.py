"""`TLSInfo`: one link's TLS files, as etcd's pkg/transport.TLSInfo, turned into credentials.

A member has two: the client side (--cert-file, --key-file, --trusted-ca-file,
--client-cert-auth, --auto-tls), used for https:// client URLs and https:// metrics URLs, and
the peer side (--peer-cert-file, ...), used both to serve https:// peer URLs and, as the client
certificate, to dial peers whose URL is https://. `cluster/cli.py` builds them from the flags,
`check_urls` refuses the combinations etcd refuses (with etcd's messages), and the servers ask for
`server_credentials()` / `ssl_context()` and the peer transport for `channel_credentials()`.

Verification, as etcd 3.4 does it (pkg/transport TLSInfo.ServerConfig):
- a trusted CA file or client_cert_auth: the server requires a client certificate signed by
  trusted_ca_file (tls.RequireAndVerifyClientCert); yes, the CA file alone is enough. gRPC then
  exposes the certificate's CN to services as `context.auth_context()["x509_common_name"]`;
  client_cert_auth is what tells auth to take it as the user name.
- neither: a client certificate is neither asked for nor checked.
- dialing a peer verifies its certificate against trusted_ca_file and its IP/DNS SAN against the
  host of the peer URL, and presents this member's own certificate.
`auto_tls` generates a self-signed certificate (openssl CLI) under the data dir, as etcd's
--auto-tls does (`self_signed`). Files are read when credentials are built, once, at start.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import subprocess
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc

def is_tls_url(url: str) -> bool:
    return urlsplit(url).scheme == "https"


@dataclass(frozen=True)
class TLSInfo:
    """The TLS files and options of one kind of link (client or peer)."""

    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False

    def empty(self) -> bool:
        """etcd's TLSInfo.Empty(): neither a certificate nor a key."""
        return not self.cert_file and not self.key_file

    @property
    def requires_client_certificate(self) -> bool:
        return bool(self.trusted_ca_file) or self.client_cert_auth

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(_read(self.key_file), _read(self.cert_file))],
            root_certificates=_read(self.trusted_ca_file) if self.trusted_ca_file else None,
            require_client_auth=self.requires_client_certificate)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials for dialing with these files: verify the server against the trusted CA
        (the system roots when there is none) and present our certificate, if any."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.trusted_ca_file) if self.trusted_ca_file else None,
            private_key=_read(self.key_file) if self.key_file else None,
            certificate_chain=_read(self.cert_file) if self.cert_file else None)

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side context for the HTTP metrics listener (same verification rules)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.requires_client_certificate:
            ctx.load_verify_locations(self.trusted_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def check_urls(client: TLSInfo, peer: TLSInfo, *, client_urls: list[str], metrics_urls: list[str],
               peer_urls: list[str]) -> None:
    """Raise ValueError, with etcd 3.4's message where it has one, for an https:// URL we could
    not serve: no certificate/key, a missing file, or client certificate auth without a CA."""
    for url in client_urls:
        if is_tls_url(url) and client.empty():
            raise ValueError(f"TLS key/cert (--cert-file, --key-file) must be provided for client url "
                             f"{url} with HTTPS scheme")
    for info, urls, ca_flag in ((client, [*client_urls, *metrics_urls], "--trusted-ca-file"),
                                (peer, peer_urls, "--peer-trusted-ca-file")):
        for url in urls:
            if is_tls_url(url):
                _check_listen(info, url, ca_flag)


def _check_listen(info: TLSInfo, url: str, ca_flag: str) -> None:
    host = urlsplit(url).netloc
    if not info.cert_file or not info.key_file:
        raise ValueError(f"cannot listen on TLS for {host}: KeyFile and CertFile are not presented")
    for path in (info.cert_file, info.key_file, info.trusted_ca_file):
        if path and not os.path.isfile(path):
            raise ValueError(f"open {path}: no such file or directory")
    if info.client_cert_auth and not info.trusted_ca_file:
        raise ValueError(f"cannot listen on TLS for {host}: client certificate authentication needs "
                         f"{ca_flag}")


def self_signed(info: TLSInfo, directory: str, urls: list[str]) -> TLSInfo:
    """etcd's --auto-tls: when no certificate is given, generate (once) a self-signed one under
    `directory`, valid for the hosts of `urls`, and use it. As etcd's ClientSelfCert, the result
    replaces the given TLSInfo whole: no trusted CA, no client certificate auth."""
    if not info.empty():
        return info
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    if not (os.path.isfile(cert) and os.path.isfile(key)):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        sans = sorted({_san(urlsplit(u).hostname or "localhost") for u in urls} | {"DNS:localhost"})
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", cert, "-days", "365", "-subj", "/O=etcd",
             "-addext", "subjectAltName=" + ",".join(sans)],
            check=True, capture_output=True)
    return TLSInfo(cert_file=cert, key_file=key)


def _san(host: str) -> str:
    try:
        ipaddress.ip_address(host)
        return f"IP:{host}"
    except ValueError:
        return f"DNS:{host}"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
