"""Asymmetric JWT signing for `--auth-token jwt,...`: RS256/384/512, PS256/384/512 and
ES256/384/512 with PEM keys, through the `cryptography` package (imported only when such a
sign-method is configured). A pub-key alone gives a verify-only provider, as etcd allows.

`asymmetric_signer(method, priv_path, pub_path)` returns (sign, verify): sign(data) -> signature
bytes (None when verify-only), verify(data, signature) -> bool. ES* signatures use JWS's raw
r||s form, not DER.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_EC_SIZES = {"256": 32, "384": 48, "512": 66}


def asymmetric_signer(method: str, priv_path: str | None, pub_path: str | None):
    family, bits = method[:2], method[2:]
    if family not in ("RS", "PS", "ES") or bits not in _HASHES:
        raise ValueError(f"jwt: invalid auth signature method {method!r}")
    if not priv_path and not pub_path:
        raise ValueError("jwt: missing key data (pub-key and/or priv-key)")
    priv = pub = None
    if priv_path:
        with open(priv_path, "rb") as f:
            priv = serialization.load_pem_private_key(f.read(), password=None)
    if pub_path:
        with open(pub_path, "rb") as f:
            pub = serialization.load_pem_public_key(f.read())
    if pub is None:
        pub = priv.public_key()
    want = ec.EllipticCurvePublicKey if family == "ES" else rsa.RSAPublicKey
    if not isinstance(pub, want):
        raise ValueError(f"jwt: key type does not match sign-method {method!r}")
    if priv is not None and priv.public_key().public_numbers() != pub.public_numbers():
        raise ValueError("jwt: public and private keys don't match")
    algorithm = _HASHES[bits]()

    if family == "ES":
        size = _EC_SIZES[bits]

        def sign(data: bytes) -> bytes:
            r, s = decode_dss_signature(priv.sign(data, ec.ECDSA(algorithm)))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")

        def verify(data: bytes, sig: bytes) -> bool:
            if len(sig) != 2 * size:
                return False
            der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
            try:
                pub.verify(der, data, ec.ECDSA(algorithm))
                return True
            except InvalidSignature:
                return False
    else:
        def pad():
            if family == "RS":
                return padding.PKCS1v15()
            return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size)

        def sign(data: bytes) -> bytes:
            return priv.sign(data, pad(), algorithm)

        def verify(data: bytes, sig: bytes) -> bool:
            try:
                pub.verify(sig, data, pad(), algorithm)
                return True
            except InvalidSignature:
                return False

    return (sign if priv is not None else None), verify
