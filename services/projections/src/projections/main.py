"""Wiring of the projections API: settings, token verifier, read models, routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ehr_events import web
from ehr_events.security import TokenVerifier

from .api import audit, chart, status
from .config import ProjectionsSettings
from .readmodels import ReadModels


def create_app(
    settings: ProjectionsSettings | None = None, verifier: TokenVerifier | None = None
) -> FastAPI:
    """The read side's HTTP app; every route needs a verified token."""
    settings = settings or ProjectionsSettings()
    verifier = verifier or TokenVerifier(
        settings.jwks_url, settings.token_issuer, settings.token_audience
    )
    models = ReadModels.open(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        models.close()

    app = web.create_app(
        "EHR projections",
        max_body_bytes=settings.max_body_bytes,
        lifespan=lifespan,
        ready=models.ready,
    )
    app.state.settings = settings
    app.state.read_models = models
    app.include_router(chart.router(verifier, models, settings))
    app.include_router(audit.router(verifier, models))
    app.include_router(status.router(verifier, models))
    return app
