"""Access-token verification, shared by the gateway and every service.

Tokens are JWTs signed by the identity service with an asymmetric key (ES256 or
RS256) published at its JWKS endpoint. Only those algorithms are accepted, so
``alg: none`` and HS256 tokens signed with a public key are refused. The key set
is cached and refetched when a token names a ``kid`` the cache does not know.

A token that verified is remembered (by its exact text) until it expires, so a
client's next request with it costs a lookup instead of a signature check and a
JSON parse. A remembered token is still refused once expired, and once its key
has left the published key set.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx
import jwt
from jwt import PyJWK, PyJWKSet

ALLOWED_ALGORITHMS = ("ES256", "RS256")
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "jti")


class Role(StrEnum):
    """The roles a user can hold."""

    physician = "physician"
    nurse = "nurse"
    pharmacist = "pharmacist"
    frontdesk = "frontdesk"
    biller = "biller"
    labtech = "labtech"
    patient = "patient"
    auditor = "auditor"
    admin = "admin"


class InvalidToken(Exception):
    """The bearer token is missing, malformed, forged, expired or not for us.

    The message is safe to return to the caller: it names the failed check only.
    """


@dataclass(frozen=True)
class Principal:
    """The verified caller of a request."""

    subject: str
    username: str | None
    roles: frozenset[str]
    organization_id: str | None
    token_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    token: str = field(default="", repr=False)

    def has_any_role(self, roles: set[str] | frozenset[str]) -> bool:
        return bool(self.roles & set(roles))

    @property
    def primary_role(self) -> str | None:
        return sorted(self.roles)[0] if self.roles else None

    def actor(self) -> dict[str, str]:
        """The acting user, as stored on domain events and in the envelope."""
        actor = {"sub": self.subject}
        if self.primary_role:
            actor["role"] = ",".join(sorted(self.roles))
        if self.organization_id:
            actor["org"] = self.organization_id
        return actor


def principal_from_claims(claims: dict[str, Any], token: str = "") -> Principal:
    roles = claims.get("roles") or []
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidToken("roles claim is malformed")
    scope = claims.get("scope") or ""
    return Principal(
        subject=str(claims["sub"]),
        username=claims.get("preferred_username"),
        roles=frozenset(roles),
        organization_id=claims.get("org"),
        token_id=str(claims["jti"]),
        scopes=frozenset(str(scope).split()),
        token=token,
    )


class TokenVerifier:
    """Verifies bearer tokens against the identity service's JWKS.

    One instance per process; it is safe to share between requests.
    """

    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        audience: str,
        *,
        leeway_seconds: int = 5,
        cache_seconds: int = 300,
        min_refetch_seconds: float = 1.0,
        remember: int = 10_000,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        #: Verified tokens: text -> (principal, key id, exp); oldest first, at most ``remember``.
        self.remember = remember
        self._verified: dict[str, tuple[Principal, str, float]] = {}

    def set_jwks(self, jwks: dict[str, Any]) -> None:
        """Replace the cached key set (used after a fetch, and by tests)."""
        keys: dict[str, PyJWK] = {}
        for key in PyJWKSet.from_dict(jwks).keys:
            if key.key_id and key.algorithm_name in ALLOWED_ALGORITHMS:
                keys[key.key_id] = key
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def _fetch(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(self.jwks_url)
            response.raise_for_status()
            self.set_jwks(response.json())

    async def _key_for(self, kid: str) -> PyJWK:
        stale = time.monotonic() - self._fetched_at > self.cache_seconds
        if kid in self._keys and not stale:
            return self._keys[kid]
        async with self._lock:
            recently = time.monotonic() - self._fetched_at < self.min_refetch_seconds
            if (kid not in self._keys or stale) and not (recently and self._keys):
                try:
                    await self._fetch()
                except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                    if kid not in self._keys:
                        raise InvalidToken("signing keys are unavailable") from exc
        if kid not in self._keys:
            raise InvalidToken("unknown signing key")
        return self._keys[kid]

    async def verify(self, token: str) -> Principal:
        """Verify signature, algorithm, expiry, not-before, issuer and audience."""
        known = self._verified.get(token)
        if known is not None:
            principal, kid, expires = known
            if time.time() > expires + self.leeway:
                del self._verified[token]
                raise InvalidToken("token expired")
            # a key that left the key set takes its tokens with it
            await self._key_for(kid)
            return principal
        principal, kid, claims = await self._verify_signed(token)
        nbf = claims.get("nbf")
        if self.remember > 0 and (nbf is None or float(nbf) <= time.time()):
            if len(self._verified) >= self.remember:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = (principal, kid, float(claims["exp"]))
        return principal

    async def _verify_signed(self, token: str) -> tuple[Principal, str, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise InvalidToken("token algorithm not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id")
        key = await self._key_for(kid)
        if key.algorithm_name != alg:
            raise InvalidToken("token algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS), "verify_nbf": True},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token issuer not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise InvalidToken("token signature invalid") from None
        return principal_from_claims(claims, token), kid, claims


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header, or :class:`InvalidToken`."""
    if not authorization:
        raise InvalidToken("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("missing bearer token")
    return token.strip()
