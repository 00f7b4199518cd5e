"""Wiring of the gateway: settings, verifier, limits, decision log, upstream, routes."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ehr_events.problems import Problem, install_problem_handlers
from ehr_events.security import TokenVerifier
from ehr_events.web import ServiceMiddleware

from .access import DecisionLog, open_gateway_application
from .api import audit, identity
from .auth import make_verifier
from .config import GatewaySettings
from .edge import EdgeMiddleware
from .errors import body_too_large, error_response, install_error_handlers
from .fhir import routes as fhir_routes
from .fhir.search import PagingTokens
from .policy import RouteTable
from .ratelimit import RateLimiter
from .upstream import Upstream


def create_app(settings: GatewaySettings, verifier: TokenVerifier | None = None) -> FastAPI:
    """The gateway's ASGI app.

    Middleware, outermost first: access log (method, path, status; never a query
    string), body limit (413 before the body is read), the edge (route table, rate
    limits, token, permission, access decision), then the routes.
    """
    # httpx (the key-set fetch, test clients) logs every URL it calls, query string
    # included, at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)

    verifier = verifier or make_verifier(settings)
    decisions = DecisionLog(open_gateway_application(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.upstream = Upstream(settings)
        decisions.start()
        try:
            yield
        finally:
            await app.state.upstream.aclose()
            # saving what is queued blocks: keep it off the event loop
            await asyncio.to_thread(decisions.stop)
            decisions.app.close()

    app = FastAPI(
        title="EHR gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.decisions = decisions
    app.state.paging = PagingTokens(settings.paging_key, settings.paging_ttl_seconds)
    app.state.verifier = verifier

    install_problem_handlers(app)
    install_error_handlers(app)

    @app.get("/health/live", tags=["health"])
    def live() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/health/ready", tags=["health"])
    def ready() -> dict[str, str]:
        """The process can serve: its access decisions are being stored."""
        if not decisions.running:
            raise Problem("Not ready.", status=503, title="Service unavailable")
        return {"status": "ok"}

    app.include_router(identity.router)
    app.include_router(audit.router)
    app.include_router(fhir_routes.router)

    app.add_middleware(
        EdgeMiddleware,
        table=RouteTable(),
        verifier=verifier,
        per_address=RateLimiter(settings.rate_per_address, settings.burst_per_address),
        per_subject=RateLimiter(settings.rate_per_subject, settings.burst_per_subject),
        decisions=decisions,
    )
    app.add_middleware(
        ServiceMiddleware,
        max_bytes=settings.max_body_bytes,
        too_large=functools.partial(body_too_large, settings.max_body_bytes),
        failed=lambda path: error_response(
            path, Problem("The server could not complete the request.", status=500, title="Error")
        ),
    )
    return app
