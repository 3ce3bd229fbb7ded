"""`--auth-token`: the token providers of etcd 3.4 (auth/simple_token.go, auth/jwt.go).

- `simple` (default): a token is "<16 random letters>.<log index of its Authenticate entry>".
  The member that checked the password draws the prefix; the Authenticate entry carries it
  through the log, and every member registers the token when it applies the entry, so a token
  works on any member. A token lives `--auth-token-ttl` seconds (300) after its last use on a
  member; deleting a user or changing its password, and disabling auth, drop its tokens.
- `jwt,pub-key=P,priv-key=K,sign-method=M,ttl=D`: a signed JWT with the claims username,
  revision (the auth revision when issued) and exp. HS256/384/512 sign with the bytes of the
  priv-key file (hmac, stdlib); RS*/PS*/ES* use PEM keys through the `cryptography` package.
  JWTs cannot be revoked: one issued before an auth change gets "revision of auth store is old".

Threads: `assign`/`invalidate_user`/`enable`/`disable` run on the apply thread, `info` on the
event loop; the simple token table is guarded by a lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import threading
import time

_LETTERS = string.ascii_letters
DEFAULT_TTL = 300.0


def parse_token_opts(opts: str) -> tuple[str, dict[str, str]]:
    """etcd's decomposeOpts: "type,k=v,k=v" -> (type, {k: v}); raises ValueError."""
    parts = opts.split(",")
    kind, params = parts[0], {}
    for part in parts[1:]:
        pair = part.split("=")
        if len(pair) != 2 or pair[0] in params:
            raise ValueError(f"invalid auth token option {opts!r}")
        params[pair[0]] = pair[1]
    return kind, params


def build_token_provider(opts: str, ttl: float):
    kind, params = parse_token_opts(opts)
    if kind == "simple":
        return SimpleTokens(ttl)
    if kind == "jwt":
        return JwtTokens(params)
    raise ValueError(f"unknown auth token type {kind!r}")


class SimpleTokens:
    """etcd's tokenSimple: random tokens, registered by every member at apply time."""

    kind = "simple"

    def __init__(self, ttl: float = DEFAULT_TTL):
        self.ttl = ttl
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (username, deadline)
        self._enabled = False

    @staticmethod
    def gen_prefix() -> str:
        return "".join(secrets.choice(_LETTERS) for _ in range(16))

    def assign(self, username: str, revision: int, prefix: str, index: int) -> str:
        token = f"{prefix}.{index}"
        now = time.monotonic()
        with self._lock:
            if self._enabled:
                self._tokens[token] = (username, now + self.ttl)
                if len(self._tokens) % 1024 == 0:
                    self._sweep(now)
        return token

    def info(self, token: str, revision: int) -> tuple[str, int] | None:
        """(username, revision) of a live token, and its TTL restarts; None: invalid."""
        now = time.monotonic()
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                return None
            if entry[1] <= now:
                del self._tokens[token]
                return None
            self._tokens[token] = (entry[0], now + self.ttl)
        return entry[0], revision

    def invalidate_user(self, username: str) -> None:
        with self._lock:
            for token in [t for t, (u, _) in self._tokens.items() if u == username]:
                del self._tokens[token]

    def enable(self) -> None:
        with self._lock:
            self._enabled = True

    def disable(self) -> None:
        with self._lock:
            self._enabled = False
            self._tokens.clear()

    def _sweep(self, now: float) -> None:
        for token in [t for t, (_, d) in self._tokens.items() if d <= now]:
            del self._tokens[token]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    raise ValueError(f"invalid duration {text!r}")


class JwtTokens:
    """etcd's tokenJWT: stateless signed tokens (claims username, revision, exp)."""

    kind = "jwt"

    def __init__(self, params: dict[str, str]):
        self.method = params.get("sign-method", "")
        self.ttl = _duration(params.get("ttl", "5m"))
        priv, pub = params.get("priv-key"), params.get("pub-key")
        if self.method.startswith("HS"):
            if not priv:
                raise ValueError("jwt: HS* signing needs priv-key")
            with open(priv, "rb") as f:
                secret = f.read()
            digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(self.method)
            if digest is None:
                raise ValueError(f"jwt: unknown sign-method {self.method!r}")
            self._sign = lambda data: hmac.new(secret, data, digest).digest()
            self._verify = lambda data, sig: hmac.compare_digest(self._sign(data), sig)
            return
        from .jwt_keys import asymmetric_signer  # needs the `cryptography` package

        self._sign, self._verify = asymmetric_signer(self.method, priv, pub)

    @staticmethod
    def gen_prefix() -> str:
        return ""

    def assign(self, username: str, revision: int, prefix: str, index: int) -> str:
        if self._sign is None:
            raise ValueError("jwt: token signing attempted with verify-only key")
        header = _b64(json.dumps({"alg": self.method, "typ": "JWT"}, separators=(",", ":")).encode())
        claims = {"exp": int(time.time() + self.ttl), "revision": revision, "username": username}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{body}".encode()
        return f"{header}.{body}.{_b64(self._sign(signing_input))}"

    def info(self, token: str, revision: int) -> tuple[str, int] | None:
        try:
            header, body, sig = token.split(".")
            if json.loads(_unb64(header)).get("alg") != self.method:
                return None
            if not self._verify(f"{header}.{body}".encode(), _unb64(sig)):
                return None
            claims = json.loads(_unb64(body))
            if float(claims["exp"]) <= time.time():
                return None
            return str(claims["username"]), int(claims["revision"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def invalidate_user(self, username: str) -> None:
        pass

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass
