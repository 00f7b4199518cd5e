"""Access tokens: short-lived ES256 JWTs for a user, signed with the current key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from .config import MAX_TOKEN_TTL_SECONDS
from .domain.rules import KEY_ALGORITHM
from .domain.user import User


@dataclass(frozen=True)
class ActiveKey:
    """The key that signs tokens now."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str = field(repr=False)
    token_id: str
    expires_in: int
    kid: str


def claims_for(
    user: User, *, issuer: str, audience: str, ttl_seconds: int, now: datetime
) -> dict[str, Any]:
    """The claims of an access token (RFC 7519 registered claims plus roles and org)."""
    if not 0 < ttl_seconds <= MAX_TOKEN_TTL_SECONDS:
        raise ValueError(f"token lifetime must be 1..{MAX_TOKEN_TTL_SECONDS} seconds")
    issued_at = int(now.timestamp())
    return {
        "iss": issuer,
        "aud": audience,
        "sub": str(user.id),
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + ttl_seconds,
        "jti": uuid.uuid4().hex,
        "roles": list(user.roles),
        "org": str(user.organization_id) if user.organization_id else None,
        "preferred_username": user.username,
    }


def issue_token(
    user: User,
    key: ActiveKey,
    *,
    issuer: str,
    audience: str,
    ttl_seconds: int,
    now: datetime,
) -> IssuedToken:
    claims = claims_for(user, issuer=issuer, audience=audience, ttl_seconds=ttl_seconds, now=now)
    token = jwt.encode(
        claims,
        key.private_key,
        algorithm=KEY_ALGORITHM,
        headers={"kid": key.kid, "typ": "JWT"},
    )
    return IssuedToken(
        access_token=token, token_id=claims["jti"], expires_in=ttl_seconds, kid=key.kid
    )
