"""The records errors as problem details (RFC 9457).

Messages come from the domain errors, which name ids, versions and fields only.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from ehr_events.problems import Problem, field_errors, problem_response

from ..domain import (
    AllergyAlreadyRefuted,
    Conflict,
    DuplicatePatient,
    InvalidRecord,
    NotFound,
    RecordsError,
    VersionConflict,
)

log = logging.getLogger("records.api")

TYPE_PREFIX = "urn:ehr:problem:records:"


class NotFoundProblem(Problem):
    status = 404
    title = "Not found"
    type = TYPE_PREFIX + "not-found"


class ConflictProblem(Problem):
    status = 409
    title = "Conflict"
    type = TYPE_PREFIX + "conflict"


class InvalidProblem(Problem):
    status = 422
    title = "Validation failed"
    type = TYPE_PREFIX + "invalid"


_CONFLICT_TYPES: dict[type[Conflict], str] = {
    DuplicatePatient: "duplicate-patient",
    VersionConflict: "version-conflict",
    AllergyAlreadyRefuted: "allergy-already-refuted",
}


def problem_for(exc: Exception) -> Problem:
    """The problem a records error, or a value error of the domain, is answered with."""
    if isinstance(exc, NotFound):
        return NotFoundProblem(str(exc))
    if isinstance(exc, Conflict):
        kind = _CONFLICT_TYPES.get(type(exc), "conflict")
        return ConflictProblem(str(exc), type=TYPE_PREFIX + kind)
    if isinstance(exc, InvalidRecord):
        errors = [{"field": f, "message": exc.reason or "invalid value"} for f in exc.fields]
        return InvalidProblem(str(exc), errors=errors)
    if isinstance(exc, ValidationError):
        fields = field_errors(exc.errors())
        named = ", ".join(sorted({f["field"] for f in fields}))
        return InvalidProblem(f"Invalid fields: {named}.", errors=fields)
    # any other ValueError: its text may quote the input, so say nothing of it
    return InvalidProblem("The request holds an invalid value.")


def install_records_problems(app: FastAPI) -> None:
    """Answer records errors and domain value errors with problem details."""

    @app.exception_handler(RecordsError)
    async def _records_error(request: Request, exc: RecordsError) -> JSONResponse:
        return problem_response(problem_for(exc), request)

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        log.warning("%s on %s %s", type(exc).__name__, request.method, request.url.path)
        return problem_response(problem_for(exc), request)
