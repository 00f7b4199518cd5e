"""Identity errors as problem details."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ehr_events.problems import Problem, problem_response

from ..domain.errors import Conflict, IdentityError, InvalidInput, NoSigningKey, NotFound


def problem_for(error: IdentityError) -> Problem:
    if isinstance(error, NotFound):
        return Problem(str(error), status=404, title="Not found")
    if isinstance(error, Conflict):
        return Problem(str(error), status=409, title="Conflict")
    if isinstance(error, InvalidInput):
        return Problem(
            str(error),
            status=422,
            title="Validation failed",
            errors=[{"field": error.field, "message": str(error)}],
        )
    if isinstance(error, NoSigningKey):
        return Problem(str(error), status=503, title="Service unavailable")
    return Problem("The request could not be completed.", status=400)


def install_identity_errors(app: FastAPI) -> None:
    @app.exception_handler(IdentityError)
    async def _identity_error(request: Request, exc: IdentityError) -> JSONResponse:
        return problem_response(problem_for(exc), request)
