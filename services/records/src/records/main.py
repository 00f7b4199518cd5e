"""Wiring of the records service: settings, event store, token verifier, routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ehr_events.security import TokenVerifier
from ehr_events.web import create_app as create_service_app

from .api import allergies, patients
from .api.problems import install_records_problems
from .application import RecordsApplication
from .config import SERVICE, RecordsSettings

log = logging.getLogger("records.main")


def create_app(
    settings: RecordsSettings | None = None, verifier: TokenVerifier | None = None
) -> FastAPI:
    """The records HTTP app; ``verifier`` defaults to one on the identity JWKS."""
    settings = settings or RecordsSettings()
    verifier = verifier or TokenVerifier(
        settings.jwks_url, settings.token_issuer, settings.token_audience
    )
    records = RecordsApplication.from_settings(settings)

    def ready() -> bool:
        try:
            records.position()
        except Exception as exc:  # noqa: BLE001 - any store failure means not ready
            log.warning("event store unavailable: %s", type(exc).__name__)
            return False
        return True

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        records.close()

    app = create_service_app(
        SERVICE, max_body_bytes=settings.max_body_bytes, lifespan=lifespan, ready=ready
    )
    app.state.settings = settings
    app.state.records = records
    install_records_problems(app)
    app.include_router(patients.build_router(verifier))
    app.include_router(allergies.build_router(verifier))
    return app
