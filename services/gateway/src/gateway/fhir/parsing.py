"""Reading a FHIR resource from a request body, and naming what is wrong with it.

A body is checked in three steps: it is JSON, it is an object of the expected
``resourceType``, and the ``fhir.resources`` R4B model accepts it (types, dates,
unknown elements). Errors name the element as a FHIRPath (``Patient.name[0]``)
and the rule; submitted values are never echoed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from ehr_events.problems import field_errors

from ..policy import RESOURCE_ID
from .outcome import FhirProblem

ID_PATTERN = RESOURCE_ID
FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Errors:
    """Collects element errors, raised together as one 4xx ``OperationOutcome``."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, path: str, message: str, code: str = "invalid") -> None:
        self.items.append({"field": path, "message": message, "code": code})

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, status: int = 422) -> None:
        if self.items:
            named = ", ".join(dict.fromkeys(i["field"] for i in self.items))
            raise FhirProblem(
                f"Invalid elements: {named}.",
                status=status,
                title="Invalid resource",
                errors=self.items,
            )


def fhir_path(resource_type: str, loc: str) -> str:
    """``name.0.family`` to ``Patient.name[0].family``."""
    out = resource_type
    for part in loc.split("."):
        if not part or part == "body":
            continue
        if part.isdigit():
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}"
        # pydantic adds validator names (``function-after[...]``) to some locations
    return out


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise FhirProblem("The request has no body.", status=400, issue_code="required")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise FhirProblem(
            "The request body is not valid JSON.", status=400, issue_code="structure"
        ) from None


def parse_resource(body: bytes, resource_type: str, model: type[BaseModel]) -> dict[str, Any]:
    """The resource of a request body, validated against its R4B model."""
    data = parse_json(body)
    if not isinstance(data, dict):
        raise FhirProblem(
            f"The request body must be a {resource_type} resource (a JSON object).",
            status=400,
            issue_code="structure",
        )
    validate_resource(data, resource_type, model)
    return data


def validate_resource(data: dict[str, Any], resource_type: str, model: type[BaseModel]) -> None:
    if data.get("resourceType") != resource_type:
        errors = Errors()
        errors.add(f"{resource_type}.resourceType", f"must be {resource_type}", "structure")
        errors.raise_if_any(400)
    try:
        model.model_validate(data)
    except ValidationError as exc:
        errors = Errors()
        for error, named in zip(exc.errors(), field_errors(exc.errors()), strict=True):
            code = "required" if error.get("type") == "missing" else "structure"
            if error.get("type") == "extra_forbidden":
                code = "structure"
            errors.add(fhir_path(resource_type, named["field"]), named["message"][:200], code)
        errors.raise_if_any(400)


def only(
    element: dict[str, Any],
    allowed: frozenset[str],
    path: str,
    errors: Errors,
) -> None:
    """Refuse elements this server does not store (rather than dropping them silently)."""
    for key in element:
        if key not in allowed:
            errors.add(
                f"{path}.{key.lstrip('_')}", "is not supported by this server", "not-supported"
            )


def check_id(value: str, what: str = "id") -> str:
    if not ID_PATTERN.match(value):
        raise FhirProblem(f"The {what} is not a valid FHIR id.", status=400, issue_code="value")
    return value


def require(element: dict[str, Any], names: tuple[str, ...], path: str, errors: Errors) -> None:
    for name in names:
        if element.get(name) in (None, ""):
            errors.add(f"{path}.{name}", "is required", "required")


def check_code(value: Any, allowed: frozenset[str], path: str, errors: Errors) -> None:
    """A code must be one this server keeps (the R4B models do not check value sets)."""
    if value is not None and value not in allowed:
        errors.add(path, "must be one of " + ", ".join(sorted(allowed)), "code-invalid")


def drop_empty(element: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in element.items() if v not in (None, "", [], {})}


def record_meta(record: dict[str, Any]) -> dict[str, Any]:
    """``meta`` of a resource rendered from a records-service JSON (version, time)."""
    meta: dict[str, Any] = {"versionId": str(record["version"])}
    updated = record.get("last_updated") or record.get("updated_at") or record.get("recorded_at")
    if updated:
        meta["lastUpdated"] = str(updated)
    return meta
