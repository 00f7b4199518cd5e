"""Who is calling: the bearer token, verified against identity's published keys.

The gateway uses the shared :class:`ehr_events.security.TokenVerifier`: ES256 or
RS256 only (so ``alg: none`` and HS256-with-the-public-key fail), signature,
``exp``, ``nbf``, ``iss``, ``aud`` and the required claims. The key set is cached
and fetched again when a token names a ``kid`` the cache does not know, which
is how a key rotation at identity reaches the gateway.
"""

from __future__ import annotations

from ehr_events.security import InvalidToken, Principal, TokenVerifier, bearer_token

from .config import GatewaySettings

#: The message of :class:`InvalidToken` when there is no token at all.
MISSING = "missing bearer token"


def make_verifier(settings: GatewaySettings) -> TokenVerifier:
    """The process's one verifier, trusting identity's JWKS endpoint."""
    return TokenVerifier(settings.jwks_url, settings.token_issuer, settings.token_audience)


async def authenticate(verifier: TokenVerifier, authorization: str | None) -> Principal:
    """The caller of an ``Authorization`` header value, or :class:`InvalidToken`."""
    return await verifier.verify(bearer_token(authorization))


def challenge(exc: InvalidToken) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 (RFC 6750: no error code without a token)."""
    if str(exc) == MISSING:
        return {"WWW-Authenticate": 'Bearer realm="ehr"'}
    description = str(exc).replace('"', "'")
    return {
        "WWW-Authenticate": f'Bearer realm="ehr", error="invalid_token", '
        f'error_description="{description}"'
    }
