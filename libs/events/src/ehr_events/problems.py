"""RFC 9457 problem details for the service APIs.

Every error a service returns is ``application/problem+json``. Validation errors
name the offending fields but never echo the submitted values: those may be PHI.
"""

from __future__ import annotations

import logging
from typing import Any

import eventsourcing.persistence
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"

#: Errors that mean the database cannot be reached or used now (down, locked, no free
#: connection), from the event store and from SQLAlchemy: answered 503, never 500.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)
log = logging.getLogger("ehr.problems")


class Problem(Exception):
    """An error a service reports as problem details.

    Subclass per service error family, or raise directly with a status.
    """

    status: int = 400
    title: str = "Bad request"
    type: str = "about:blank"

    def __init__(
        self,
        detail: str | None = None,
        *,
        status: int | None = None,
        title: str | None = None,
        type: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        if type is not None:
            self.type = type
        self.errors = errors
        self.headers = headers or {}

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        return body


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    instance = request.url.path if request is not None else None
    return JSONResponse(
        problem.body(instance),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def field_errors(errors: Any) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field", "message"}`` pairs, without the input values."""
    out: list[dict[str, str]] = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        kind = error.get("type", "")
        if kind == "json_invalid":
            message = "malformed JSON"
        elif kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "field required"
        else:
            # pydantic's message names the rule, not the value; ctx may carry input
            message = str(error.get("msg", "invalid value"))
        out.append({"field": ".".join(loc) or "body", "message": message})
    return out


def validation_problem(errors: Any) -> Problem:
    fields = field_errors(errors)
    malformed = any(e.get("type") == "json_invalid" for e in errors)
    if malformed:
        return Problem("The request body is not valid JSON.", status=400, title="Malformed JSON")
    named = ", ".join(sorted({f["field"] for f in fields}))
    return Problem(
        f"Invalid fields: {named}.",
        status=422,
        title="Validation failed",
        errors=fields,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Turn every error of ``app`` into problem details, stack traces into a bare 500."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(validation_problem(exc.errors()), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}
        problem = Problem(
            str(exc.detail) if exc.detail and exc.status_code != 404 else None,
            status=exc.status_code,
            title=titles.get(exc.status_code, "Error"),
            headers=dict(exc.headers or {}),
        )
        return problem_response(problem, request)

    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # the database is down, locked or out of connections: transient, not a bug
        log.warning(
            "database unavailable (%s) on %s %s",
            type(exc).__name__,
            request.method,
            request.url.path,
        )
        problem = Problem(
            "The service's database is unavailable; retry later.",
            status=503,
            title="Service unavailable",
            headers={"Retry-After": "1"},
        )
        return problem_response(problem, request)

    for kind in DATABASE_UNAVAILABLE:
        app.add_exception_handler(kind, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the exception text may hold PHI: log its type only
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return problem_response(
            Problem("The server could not complete the request.", status=500, title="Error"),
            request,
        )
