"""ES256 key material: generation, RFC 7638 key ids, public JWKs, the JWKS document."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from .domain.rules import KEY_ALGORITHM


@dataclass(frozen=True)
class KeyMaterial:
    """A fresh key pair: its kid, private key (PKCS#8 PEM) and public JWK."""

    kid: str
    private_key_pem: str = field(repr=False)
    public_jwk: dict[str, str]


def generate_key() -> KeyMaterial:
    """A new P-256 key pair for ES256."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")
    jwk = public_jwk(private_key.public_key())
    return KeyMaterial(kid=jwk["kid"], private_key_pem=pem, public_jwk=jwk)


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of an EC public key."""
    canonical = json.dumps(
        {name: jwk[name] for name in ("crv", "kty", "x", "y")},
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK of a key, with ``kid`` (its thumbprint), ``alg`` and ``use``."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        # to_jwk of a private key would include "d": only public keys pass here
        raise TypeError("public_jwk takes a public key")
    jwk: dict[str, str] = dict(ECAlgorithm.to_jwk(public_key, as_dict=True))
    jwk.update({"kid": thumbprint(jwk), "alg": KEY_ALGORITHM, "use": "sig"})
    return jwk


def load_private_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("signing keys are EC keys")
    return key


def jwks_document(keys: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """The JWKS body, with nothing but public members."""
    public_members = ("kty", "crv", "x", "y", "kid", "alg", "use")
    return {"keys": [{m: k[m] for m in public_members if m in k} for k in keys]}
