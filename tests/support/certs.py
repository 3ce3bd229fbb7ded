"""Test certificates, made with the openssl CLI at test time: a CA, server certificates for
loopback, client certificates with a given CN, and unrelated CAs to be refused.

    ca = CertificateAuthority.create(tmp_path / "ca", "kvstack test CA")
    server = ca.issue("server")                # SAN IP:127.0.0.1, DNS:localhost; both usages
    client = ca.issue("root", server=False)    # CN=root, client usage only
    server.cert, server.key, ca.cert           # file paths, as the flags want them

Keys are EC P-256 (fast to generate on a loaded machine); certificates are valid for a day.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_SANS = "IP:127.0.0.1,DNS:localhost"


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert: str
    key: str
    cn: str


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA in `directory` (ca.pem, ca-key.pem) that issues certificates."""

    directory: Path
    cert: str
    key: str

    @classmethod
    def create(cls, directory: Path, name: str) -> "CertificateAuthority":
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "ca.pem", directory / "ca-key.pem"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return cls(directory, str(cert), str(key))

    def issue(self, cn: str, *, server: bool = True, client: bool = True,
              sans: str = SERVER_SANS) -> Issued:
        """A certificate for `cn` signed by this CA. `server`: with serverAuth usage and `sans`
        (loopback by default); `client`: with clientAuth usage."""
        stem = self.directory / cn
        cert, key, csr, ext = (Path(f"{stem}{s}") for s in (".pem", "-key.pem", ".csr", ".ext"))
        usages = [u for u, on in (("serverAuth", server), ("clientAuth", client)) if on]
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 "extendedKeyUsage=" + ",".join(usages)]
        if server:
            lines.append(f"subjectAltName={sans}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
                 "-out", cert, "-days", "1", "-extfile", ext)
        return Issued(str(cert), str(key), cn)


def _openssl(*args) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
