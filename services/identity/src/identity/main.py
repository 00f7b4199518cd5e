"""Wiring of the identity service: settings, application, verifier, routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ehr_events import web
from ehr_events.policy import roles_for
from ehr_events.security import TokenVerifier

from .api import auth, organizations, users
from .api.errors import install_identity_errors
from .application import IdentityApplication
from .config import IdentitySettings, check_demo_seeding
from .forwarding import trusted_networks
from .seed import seed_demo_users
from .verifier import LocalTokenVerifier

log = logging.getLogger("identity")


def create_app(
    settings: IdentitySettings | None = None,
    verifier: TokenVerifier | None = None,
    *,
    identity: IdentityApplication | None = None,
) -> FastAPI:
    """The identity service's HTTP app.

    Makes sure a signing key exists and, in development, seeds the demo users.
    Tokens on the admin routes are checked by ``verifier``, by default one fed
    from this process's own key ring.
    """
    settings = settings or IdentitySettings()
    check_demo_seeding(settings)
    identity = identity or IdentityApplication(settings)
    kid = identity.ensure_signing_key()
    log.info("signing key %s is active", kid)
    if settings.seeds_demo_users():
        seed_demo_users(identity)
    verifier = verifier or LocalTokenVerifier(identity)
    admin = web.principal_dependency(verifier, roles_for("user.admin"))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        identity.close()

    def ready() -> bool:
        try:
            return identity.key_ring() is not None
        except Exception:  # noqa: BLE001 - the store is away: not ready
            return False

    app = web.create_app(
        "identity", max_body_bytes=settings.max_body_bytes, lifespan=lifespan, ready=ready
    )
    app.state.settings = settings
    app.state.identity = identity
    app.state.trusted_proxies = trusted_networks(settings.trusted_proxies)
    install_identity_errors(app)
    app.include_router(auth.build_router(admin))
    app.include_router(users.build_router(admin))
    app.include_router(organizations.build_router(admin))
    return app
