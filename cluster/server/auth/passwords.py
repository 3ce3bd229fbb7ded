"""Password hashing: scrypt (hashlib, OpenSSL) with a random 16-byte salt per user.

etcd hashes with bcrypt (cost 10). We use scrypt N=2**14, r=8, p=1 (about 16 MiB and a few
hundred milliseconds per hash), stored as "scrypt$<N>$<r>$<p>$<salt b64>$<hash b64>" in the
user's `password` field. A hash is computed only on the member that receives UserAdd,
UserChangePassword or Authenticate, never per request and never on the event loop (callers run
these functions on a worker thread); only the hash enters the replicated log.

`check_credentials` runs the KDF whether or not the user exists (or has a password), against a
fixed decoy hash when it does not, so that Authenticate takes the KDF's time either way and its
timing does not tell which user names exist (etcd 3.4 answers an unknown name at once).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

_N, _R, _P, _DKLEN = 2 ** 14, 8, 1, 32
_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM, dklen=_DKLEN)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(stored: bytes, password: str) -> bool:
    """Whether `password` matches the stored hash (constant-time compare; False if malformed)."""
    try:
        scheme, n, r, p, salt, digest = stored.decode().split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=_MAXMEM, dklen=len(want))
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(got, want)


_DECOY = "scrypt$%d$%d$%d$%s$%s" % (_N, _R, _P, base64.b64encode(b"\0" * 16).decode(),
                                   base64.b64encode(b"\0" * _DKLEN).decode())


def check_credentials(stored: bytes | None, password: str) -> bool:
    """Whether `password` matches `stored` (None: no such user, or one without a password: always
    False), at the cost of one KDF run in every case."""
    if stored is None:
        verify_password(_DECOY.encode(), password)
        return False
    return verify_password(stored, password)
