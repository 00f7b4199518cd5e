"""Errors in the caller's dialect: ``OperationOutcome`` on FHIR routes, else problem details."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ehr_events.problems import Problem, problem_response, validation_problem

from .fhir.outcome import outcome_response

Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def is_fhir(path: str) -> bool:
    return path == "/fhir" or path.startswith("/fhir/")


def error_response(path: str, problem: Problem) -> Response:
    """The response of ``problem`` for a request to ``path``."""
    if is_fhir(path):
        return outcome_response(problem)
    return problem_response(problem)


def install_error_handlers(app: FastAPI) -> None:
    """Render the library's problem handlers as ``OperationOutcome`` on FHIR routes.

    :func:`ehr_events.problems.install_problem_handlers` must have run: its
    handlers still answer every non-FHIR route.
    """
    for kind in (Problem, RequestValidationError, StarletteHTTPException):
        fallback: Handler = app.exception_handlers[kind]

        async def handler(
            request: Request, exc: Exception, fallback: Handler = fallback
        ) -> Response:
            if not is_fhir(request.url.path):
                response = fallback(request, exc)
                return await response if inspect.isawaitable(response) else response
            return outcome_response(as_problem(exc))

        app.add_exception_handler(kind, handler)


def as_problem(exc: Exception) -> Problem:
    """The problem an exception of the web framework stands for."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, RequestValidationError):
        return validation_problem(exc.errors())
    if isinstance(exc, StarletteHTTPException):
        detail = "No such route." if exc.status_code == 404 else str(exc.detail)
        return Problem(detail, status=exc.status_code, headers=dict(exc.headers or {}))
    return Problem("The server could not complete the request.", status=500, title="Error")


async def body_too_large(max_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
    """The 413 response of the body limit, in the dialect of the route."""
    problem = Problem(
        f"The request body exceeds {max_bytes} bytes.", status=413, title="Payload too large"
    )
    await error_response(scope.get("path", ""), problem)(scope, receive, send)
