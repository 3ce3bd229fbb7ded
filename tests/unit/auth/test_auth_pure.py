"""Pure parts of the member's auth: permission coverage, tokens, password hashes."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cluster.server import errors
from cluster.server.auth import passwords
from cluster.server.auth.passwords import check_credentials, hash_password, verify_password
from cluster.server.auth.state import READ, READWRITE, WRITE, AuthInfo, AuthState, covers, perm_interval
from cluster.server.auth.tokens import JwtTokens, SimpleTokens, build_token_provider, parse_token_opts
from protos.authpb import auth_pb2


def state_with(perms) -> AuthState:
    role = auth_pb2.Role(name=b"r", keyPermission=[
        auth_pb2.Permission(permType=t, key=k, range_end=e) for t, k, e in perms])
    users = {"u": auth_pb2.User(name=b"u", roles=["r"]), "root": auth_pb2.User(name=b"root", roles=["root"])}
    return AuthState(enabled=True, revision=5, users=users, roles={"r": role})


def allowed(state: AuthState, key: bytes, end: bytes = b"", write: bool = False, user: str = "u") -> bool:
    try:
        state.check_op(AuthInfo(user, 5), key, end, write)
        return True
    except errors.EtcdError as exc:
        assert exc is errors.PERMISSION_DENIED
        return False


def test_interval_coverage():
    assert covers([(b"a", b"c"), (b"c", b"e")], (b"a", b"e"))
    assert not covers([(b"a", b"c"), (b"d", b"e")], (b"a", b"e"))
    assert covers([(b"a", None)], (b"x", None))
    assert not covers([(b"a", b"z")], (b"b", None))
    assert covers([(b"a", b"b"), (b"a", b"z")], (b"c", b"d"))
    assert perm_interval(b"k", b"") == (b"k", b"k\0")
    assert perm_interval(b"k", b"\0") == (b"k", None)


def test_permission_checks_follow_etcd():
    s = state_with([(READ, b"pub/", b"pub0"), (READWRITE, b"k", b""), (WRITE, b"w", b"\0"),
                    (READ, b"a", b"c"), (READ, b"c", b"e")])
    assert allowed(s, b"pub/x") and allowed(s, b"pub/", b"pub0") and allowed(s, b"pub/a", b"pub/b")
    assert not allowed(s, b"pub/", b"pub1") and not allowed(s, b"pub/x", write=True)
    assert allowed(s, b"k") and allowed(s, b"k", write=True) and not allowed(s, b"k2")
    assert allowed(s, b"w", write=True) and allowed(s, b"zzz", b"\0", write=True) and not allowed(s, b"w")
    assert allowed(s, b"a", b"e")  # the union of two permissions covers it
    assert not allowed(s, b"a", b"\0")
    assert allowed(s, b"anything", b"\0", user="root")
    with pytest.raises(errors.EtcdError) as old:
        s.check_op(AuthInfo("u", 4), b"k", b"", False)
    assert old.value is errors.AUTH_OLD_REVISION
    with pytest.raises(errors.EtcdError) as empty:
        s.check_op(AuthInfo(), b"k", b"", False)
    assert empty.value is errors.USER_EMPTY
    assert not allowed(s, b"k", user="ghost")
    AuthState().check_op(AuthInfo(), b"k", b"", True)  # auth off: anything goes


def test_admin_checks():
    s = state_with([])
    s.check_admin(AuthInfo("root", 5))
    for info, err in ((None, errors.USER_EMPTY), (AuthInfo(), errors.USER_EMPTY),
                      (AuthInfo("ghost", 5), errors.USER_NOT_FOUND), (AuthInfo("u", 5), errors.PERMISSION_DENIED)):
        with pytest.raises(errors.EtcdError) as refused:
            s.check_admin(info)
        assert refused.value is err


def test_passwords():
    stored = hash_password("s3cret").encode()
    assert verify_password(stored, "s3cret")
    assert not verify_password(stored, "s3creT")
    assert not verify_password(b"garbage", "s3cret")
    assert hash_password("x") != hash_password("x")  # salted


def test_credentials_run_the_kdf_for_unknown_users_too(monkeypatch):
    calls = []
    real_scrypt = passwords.hashlib.scrypt

    def counting_scrypt(*args, **kwargs):
        calls.append(kwargs["n"])
        return real_scrypt(*args, **kwargs)
    monkeypatch.setattr(passwords.hashlib, "scrypt", counting_scrypt)
    stored = hash_password("pw").encode()
    calls.clear()
    assert check_credentials(stored, "pw") and not check_credentials(stored, "wrong")
    assert not check_credentials(None, "pw") and not check_credentials(None, "")
    assert calls == [2 ** 14] * 4  # same KDF, same cost, whether the user exists or not


def test_simple_tokens_expire_and_are_dropped():
    tokens = SimpleTokens(ttl=0.2)
    tokens.enable()
    t = tokens.assign("alice", 3, SimpleTokens.gen_prefix(), 42)
    assert t.endswith(".42") and len(t.split(".")[0]) == 16
    assert tokens.info(t, 7) == ("alice", 7)
    time.sleep(0.3)
    assert tokens.info(t, 7) is None
    t2 = tokens.assign("bob", 3, "P", 43)
    tokens.invalidate_user("bob")
    assert tokens.info(t2, 7) is None
    t3 = tokens.assign("bob", 3, "P", 44)
    tokens.disable()
    assert tokens.info(t3, 7) is None


def test_token_options():
    assert parse_token_opts("jwt,sign-method=HS256,ttl=5m") == ("jwt", {"sign-method": "HS256", "ttl": "5m"})
    for bad in ("jwt,a", "jwt,a=1,a=2"):
        with pytest.raises(ValueError):
            parse_token_opts(bad)
    with pytest.raises(ValueError):
        build_token_provider("magic", 300)
    assert isinstance(build_token_provider("simple", 300), SimpleTokens)


@pytest.mark.parametrize("method", ["RS256", "PS384", "ES256", "ES512"])
def test_jwt_asymmetric_roundtrip(tmp_path, method):
    key = ec.generate_private_key({"256": ec.SECP256R1(), "512": ec.SECP521R1()}[method[2:]]) \
        if method.startswith("ES") else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    signer = JwtTokens({"sign-method": method, "priv-key": str(priv), "pub-key": str(pub), "ttl": "1m"})
    token = signer.assign("alice", 9, "", 1)
    assert signer.info(token, 100) == ("alice", 9)
    verifier = JwtTokens({"sign-method": method, "pub-key": str(pub)})
    assert verifier.info(token, 100) == ("alice", 9)
    with pytest.raises(ValueError):
        verifier.assign("alice", 9, "", 1)
    head, body, sig = token.split(".")
    assert signer.info(f"{head}.{body}.{sig[::-1]}", 1) is None


def test_jwt_hmac_and_expiry(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"k" * 32)
    tokens = JwtTokens({"sign-method": "HS512", "priv-key": str(secret), "ttl": "1ms"})
    token = tokens.assign("bob", 2, "", 1)
    time.sleep(1.1)  # exp has one-second resolution
    assert tokens.info(token, 2) is None
    other = JwtTokens({"sign-method": "HS512", "priv-key": str(secret), "ttl": "1h"})
    assert other.info(other.assign("bob", 2, "", 1), 2) == ("bob", 2)
    forged_alg = JwtTokens({"sign-method": "HS256", "priv-key": str(secret), "ttl": "1h"})
    assert forged_alg.info(other.assign("bob", 2, "", 1), 2) is None


class _FakeContext:
    def __init__(self, metadata=(), cn=None):
        self._metadata, self._cn = metadata, cn

    def invocation_metadata(self):
        return self._metadata

    def auth_context(self):
        return {"x509_common_name": [self._cn.encode()]} if self._cn else {}


def test_identity_from_token_then_client_certificate():
    from cluster.server.auth.gate import RequestAuth
    from cluster.server.auth.store import AuthStore

    tokens = SimpleTokens()
    store = AuthStore(tokens)
    store.load([(b"enabled", b"\x01")])
    t = tokens.assign("alice", 1, "P", 7)
    assert RequestAuth(store, _FakeContext((("token", t),), cn="carol"), True).info() == AuthInfo("alice", 1)
    assert RequestAuth(store, _FakeContext((("authorization", t),)), False).info() == AuthInfo("alice", 1)
    assert RequestAuth(store, _FakeContext(cn="carol"), True).info() == AuthInfo("carol", 1)
    assert RequestAuth(store, _FakeContext(cn="carol"), False).info() is None  # no --client-cert-auth
    with pytest.raises(errors.EtcdError) as bad:
        RequestAuth(store, _FakeContext((("token", "forged.1"),), cn="carol"), True).info()
    assert bad.value is errors.INVALID_AUTH_TOKEN
