"""What every service's HTTP app shares: body limit, access log, health, auth.

Access log lines carry the method, the path and the status, never the query
string (FHIR search parameters may hold PHI) and never a body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import Problem, install_problem_handlers
from .security import InvalidToken, Principal, TokenVerifier, bearer_token

access_log = logging.getLogger("ehr.access")
error_log = logging.getLogger("ehr.errors")


class BodyTooLarge(Exception):
    pass


class ResponseWatch:
    """An ASGI ``send`` that notes the response's status once the response has started."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status: int | None = None

    @property
    def started(self) -> bool:
        return self.status is not None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 before the app reads them."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        respond: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.respond = respond or self._problem

    async def _problem(self, scope: Scope, receive: Receive, send: Send) -> None:
        from .problems import problem_response

        problem = Problem(
            f"The request body exceeds {self.max_bytes} bytes.",
            status=413,
            title="Payload too large",
        )
        response = problem_response(problem)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self.respond(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        watch = ResponseWatch(send)
        try:
            await self.app(scope, limited_receive, watch)
        except BodyTooLarge:
            if not watch.started:
                await self.respond(scope, receive, send)


class UnhandledErrorMiddleware:
    """Answer an unexpected exception with a bare 500, logging its type only.

    Starlette's own last-resort handler re-raises after answering, so the server
    would log the traceback and the exception's message, which may hold PHI.
    """

    def __init__(self, app: ASGIApp, respond: Callable[[str], Any] | None = None) -> None:
        self.app = app
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = ResponseWatch(send)
        try:
            await self.app(scope, receive, watch)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            error_log.error(
                "unhandled %s on %s %s", type(exc).__name__, scope.get("method"), scope.get("path")
            )
            if watch.started:
                return
            from .problems import problem_response

            problem = Problem(
                "The server could not complete the request.", status=500, title="Error"
            )
            response = (
                self.respond(scope.get("path", "")) if self.respond else problem_response(problem)
            )
            await response(scope, receive, send)


class AccessLogMiddleware:
    """One log line per request: method, path, status, milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        watch = ResponseWatch(send)
        try:
            await self.app(scope, receive, watch)
        finally:
            access_log.info(
                "%s %s %d %.1fms",
                scope.get("method"),
                scope.get("path"),
                watch.status or 500,
                (time.perf_counter() - start) * 1000,
            )


def create_app(
    title: str,
    *,
    max_body_bytes: int = 1024 * 1024,
    lifespan: Any = None,
    ready: Callable[[], bool] | None = None,
) -> FastAPI:
    """A FastAPI app with problem details, a body limit, an access log and health routes."""
    app = FastAPI(title=title, lifespan=lifespan)
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(AccessLogMiddleware)

    @app.get("/health/live", tags=["health"], include_in_schema=False)
    def live() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/health/ready", tags=["health"], include_in_schema=False)
    def is_ready() -> dict[str, str]:
        """The process can serve requests."""
        if ready is not None and not ready():
            raise Problem("Not ready.", status=503, title="Service unavailable")
        return {"status": "ok"}

    return app


class Authenticated:
    """FastAPI dependency: the verified caller, optionally restricted to roles.

    Services verify every request's token themselves; they trust no network position.
    """

    def __init__(self, verifier: TokenVerifier, roles: Iterable[str] | None = None) -> None:
        self.verifier = verifier
        self.roles = frozenset(roles) if roles is not None else None

    async def __call__(self, request: Request) -> Principal:
        try:
            principal = await self.verifier.verify(
                bearer_token(request.headers.get("authorization"))
            )
        except InvalidToken as exc:
            raise Problem(
                str(exc),
                status=401,
                title="Unauthorized",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from None
        if self.roles is not None and not principal.has_any_role(self.roles):
            raise Problem("Your role does not allow this action.", status=403, title="Forbidden")
        return principal


def principal_dependency(verifier: TokenVerifier, roles: Iterable[str] | None = None) -> Any:
    """``Annotated[Principal, Depends(...)]`` for routes of a service."""
    return Annotated[Principal, Depends(Authenticated(verifier, roles))]
