"""Token verification inside the identity service, against its own key ring."""

from __future__ import annotations

import asyncio

from ehr_events.security import TokenVerifier

from .application import IdentityApplication


class LocalTokenVerifier(TokenVerifier):
    """A :class:`TokenVerifier` whose key set comes from the key ring, not over HTTP.

    Everything else (algorithms, claims, expiry, caching, refetch on an unknown
    kid) is the shared verifier's, so identity checks tokens like every service.
    """

    def __init__(self, identity: IdentityApplication) -> None:
        settings = identity.settings
        super().__init__(
            settings.jwks_url,
            settings.token_issuer,
            settings.token_audience,
            cache_seconds=30,
            # reading the ring is a local query, so a kid minted by a rotation
            # a moment ago is looked up at once rather than refused for a second
            min_refetch_seconds=0.0,
        )
        self.identity = identity

    async def _fetch(self) -> None:
        self.set_jwks(await asyncio.to_thread(self.identity.jwks))
