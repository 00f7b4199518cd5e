"""Test helpers every service uses: signed tokens, settings, contract base cases.

:class:`TokenFactory` makes real ES256 tokens with its own key pair, and primes a
:class:`~ehr_events.security.TokenVerifier` with the matching JWKS, so service
tests exercise the real verification code without the identity service.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from .config import ServiceSettings
from .security import TokenVerifier

TEST_ISSUER = "http://127.0.0.1:8000/auth"
TEST_AUDIENCE = "ehr"


def random_cipher_key() -> str:
    """A fresh AES-256 key, base64, as ``EHR_CIPHER_KEY`` expects."""
    return base64.b64encode(os.urandom(32)).decode()


class TokenFactory:
    """Issues ES256 tokens under one key id, and the JWKS to verify them."""

    def __init__(self, issuer: str = TEST_ISSUER, audience: str = TEST_AUDIENCE) -> None:
        self.issuer = issuer
        self.audience = audience
        self.kid = uuid.uuid4().hex
        self.private_key = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict[str, Any]:
        jwk = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "alg": "ES256", "use": "sig"})
        return {"keys": [jwk]}

    def verifier(self) -> TokenVerifier:
        verifier = TokenVerifier("http://127.0.0.1:9/unused", self.issuer, self.audience)
        verifier.set_jwks(self.jwks())
        verifier.cache_seconds = 10**9
        return verifier

    def token(
        self,
        roles: list[str] | tuple[str, ...] = ("physician",),
        *,
        subject: str | None = None,
        organization_id: str | None = "org-test",
        ttl: int = 600,
        **overrides: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject or str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "roles": list(roles),
            "org": organization_id,
            "preferred_username": "tester",
        }
        claims.update(overrides)
        return jwt.encode(claims, self.private_key, algorithm="ES256", headers={"kid": self.kid})

    def headers(self, roles: list[str] | tuple[str, ...] = ("physician",), **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(roles, **kw)}"}


def settings_for_test(
    settings_class: type[ServiceSettings],
    var_dir: Path,
    *,
    database_url: str = "",
    db_schema: str = "",
    **overrides: Any,
) -> Any:
    """Settings of the ``test`` profile, with a fresh cipher key and its own folder."""
    return settings_class(
        profile="test",
        var_dir=var_dir,
        database_url=database_url,
        db_schema=db_schema,
        cipher_key=random_cipher_key(),
        token_issuer=TEST_ISSUER,
        token_audience=TEST_AUDIENCE,
        **overrides,
    )
