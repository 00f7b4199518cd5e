"""The FHIR R4 routes: Patient and AllergyIntolerance over records and the chart.

Writes go to the records service with the caller's token; reads and searches go
to the chart (projections service). Responses are ``application/fhir+json``,
errors ``OperationOutcome``. Versions are weak ETags (``W/"<versionId>"``); an
update needs ``If-Match`` with the version it was based on.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ..deps import Access, Paging, Services, Settings
from ..upstream import UpstreamProblem
from .allergy import allergy_resource, parse_allergy
from .capability import capability_statement
from .chart import Chart, Kind
from .outcome import FhirJSONResponse, FhirProblem
from .parsing import Errors, check_id, parse_json
from .patient import parse_patient, patient_resource, patient_write
from .search import Search, search_from_query, searchset

router = APIRouter(prefix="/fhir", tags=["fhir"])

PATIENT = Kind("Patient", "/patients/{id}", patient_resource)
ALLERGY = Kind("AllergyIntolerance", "/allergies/{id}", allergy_resource)

JSON_TYPES = frozenset({"application/fhir+json", "application/json"})
FORM_TYPE = "application/x-www-form-urlencoded"
IF_MATCH = re.compile(r'^(?:W/)?"(\d{1,18})"$')

_PUBLISHED = datetime.now(UTC).date().isoformat()


@router.get("/metadata")
async def capabilities(settings: Settings) -> JSONResponse:
    """The server's CapabilityStatement."""
    return fhir_json(capability_statement(settings.fhir_base, _PUBLISHED))


# --- Patient -------------------------------------------------------------------------


@router.post("/Patient")
async def create_patient(
    request: Request, access: Access, services: Services, settings: Settings
) -> Response:
    """Register a patient (FHIR create)."""
    write = parse_patient(await json_body(request))
    try:
        created = await services.records.call(
            "POST", "/patients", access.caller(), json=write.registration()
        )
    except UpstreamProblem as problem:
        if problem.status == 409:
            raise FhirProblem(
                "A patient with this medical record number already exists.",
                status=409,
                issue_code="duplicate",
                title="Duplicate",
            ) from None
        raise
    patient_id, version = str(created["id"]), int(created["version"])
    access.patient_id = patient_id
    return await _written(request, access, services, settings, PATIENT, patient_id, version, 201)


@router.get("/Patient/{id}")
async def read_patient(id: str, access: Access, services: Services, settings: Settings) -> Response:
    """Read a patient (read-your-writes: never 404 for a patient records holds)."""
    check_id(id)
    chart = Chart(services, access.caller(), settings.read_your_writes_wait_ms)
    return resource_response(await chart.read(PATIENT, id))


@router.put("/Patient/{id}")
async def update_patient(
    id: str,
    request: Request,
    access: Access,
    services: Services,
    settings: Settings,
) -> Response:
    """Replace a patient's demographics (FHIR update with If-Match)."""
    check_id(id)
    expected = if_match_version(request.headers.get("if-match"))
    data = parse_json(await json_body(request))
    if not isinstance(data, dict):
        raise FhirProblem("The request body must be a Patient resource.", status=400)
    if data.get("id") != id:
        errors = Errors()
        errors.add("Patient.id", "must equal the id in the URL", "invalid")
        errors.raise_if_any(400)
    write = patient_write(data)
    try:
        updated = await services.records.call(
            "PUT", f"/patients/{id}/demographics", access.caller(), json=write.update(expected)
        )
    except UpstreamProblem as problem:
        if problem.status == 409:
            raise FhirProblem(
                "The patient has changed since the version in If-Match; read it again.",
                status=412,
                title="Precondition failed",
                issue_code="conflict",
            ) from None
        raise
    version = int(updated["version"])
    return await _written(request, access, services, settings, PATIENT, id, version, 200)


# --- AllergyIntolerance ----------------------------------------------------------------


@router.post("/AllergyIntolerance")
async def create_allergy(
    request: Request, access: Access, services: Services, settings: Settings
) -> Response:
    """Record an allergy or intolerance of a patient (FHIR create)."""
    write = parse_allergy(await json_body(request), settings.fhir_base)
    access.patient_id = write.patient_id
    try:
        created = await services.records.call(
            "POST", f"/patients/{write.patient_id}/allergies", access.caller(), json=write.command
        )
    except UpstreamProblem as problem:
        if problem.status == 404:
            raise FhirProblem(
                "The referenced patient is not known.",
                status=422,
                errors=[
                    {
                        "field": "AllergyIntolerance.patient.reference",
                        "message": "does not resolve to a known patient",
                        "code": "not-found",
                    }
                ],
            ) from None
        raise
    allergy_id, version = str(created["id"]), int(created["version"])
    return await _written(request, access, services, settings, ALLERGY, allergy_id, version, 201)


@router.get("/AllergyIntolerance/{id}")
async def read_allergy(id: str, access: Access, services: Services, settings: Settings) -> Response:
    """Read an allergy (read-your-writes, as for patients)."""
    check_id(id)
    chart = Chart(services, access.caller(), settings.read_your_writes_wait_ms)
    resource = await chart.read(ALLERGY, id)
    reference = str((resource.get("patient") or {}).get("reference") or "")
    if reference.startswith("Patient/"):
        access.patient_id = reference.removeprefix("Patient/")
    return resource_response(resource)


# --- searches (GET with a query string, or POST _search with a form body) -----------


def _search_routes(resource_type: str, what: str) -> None:
    """``GET /<type>`` and ``POST /<type>/_search`` for one resource type."""

    async def search(
        request: Request, access: Access, services: Services, settings: Settings, paging: Paging
    ) -> JSONResponse:
        pairs = request.query_params.multi_items()
        search = search_from_query(resource_type, pairs, paging, access.subject)
        return await _search(search, access, services, settings, paging)

    async def search_by_form(
        request: Request, access: Access, services: Services, settings: Settings, paging: Paging
    ) -> JSONResponse:
        pairs = request.query_params.multi_items() + await form_pairs(request)
        search = search_from_query(resource_type, pairs, paging, access.subject)
        return await _search(search, access, services, settings, paging)

    router.add_api_route(
        f"/{resource_type}",
        search,
        methods=["GET"],
        name=f"search_{resource_type}",
        summary=f"Search {what}",
    )
    router.add_api_route(
        f"/{resource_type}/_search",
        search_by_form,
        methods=["POST"],
        name=f"search_{resource_type}_by_form",
        summary=f"Search {what} with form-encoded parameters (keeps search terms out of URLs)",
    )


_search_routes("Patient", "patients by family, given, birthdate and identifier")
_search_routes("AllergyIntolerance", "allergies by patient")


# --- shared ---------------------------------------------------------------------------


async def _written(
    request: Request,
    access: Access,
    services: Services,
    settings: Settings,
    kind: Kind,
    resource_id: str,
    version: int,
    status: int,
) -> Response:
    location = f"{settings.fhir_base}/{kind.resource_type}/{resource_id}/_history/{version}"
    if prefers_minimal(request):
        return Response(
            status_code=status,
            headers={"Location": location, "ETag": f'W/"{version}"'},
        )
    chart = Chart(services, access.caller(), settings.read_your_writes_wait_ms)
    resource = await chart.written(kind, resource_id, version)
    return resource_response(resource, status, location=location)


async def _search(
    search: Search, access: Access, services: Services, settings: Settings, paging: Paging
) -> JSONResponse:
    patients = search.params.get("patient") or []
    if len(patients) == 1:
        access.patient_id = patients[0]
    result = await services.projections.call(
        "POST",
        f"/chart/{search.resource_type}/_search",
        access.caller(),
        json=search.upstream_body(),
    )
    if not isinstance(result, dict):
        result = {}
    bundle = searchset(
        search, result, base_url=settings.fhir_base, tokens=paging, subject=access.subject
    )
    return fhir_json(bundle)


async def json_body(request: Request) -> bytes:
    """The body of a FHIR write; 415 for anything but JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES:
        raise FhirProblem(
            "Send resources as application/fhir+json.", status=415, title="Unsupported media type"
        )
    return await request.body()


async def form_pairs(request: Request) -> list[tuple[str, str]]:
    """Parameters of a ``_search`` POST (``application/x-www-form-urlencoded``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if not body:
        return []
    if content_type != FORM_TYPE:
        raise FhirProblem(
            f"Send search parameters as {FORM_TYPE}.", status=415, title="Unsupported media type"
        )
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise FhirProblem("The search form is malformed.", status=400) from None


def if_match_version(header: str | None) -> int:
    """The version an update is based on; 428 without ``If-Match``."""
    if header is None or not header.strip():
        raise FhirProblem(
            'An update needs If-Match: W/"<versionId>" of the version it changes.',
            status=428,
            title="Precondition required",
            issue_code="required",
        )
    match = IF_MATCH.match(header.strip())
    if match is None:
        raise FhirProblem('If-Match must be a version ETag such as W/"3".', status=400)
    return int(match.group(1))


def prefers_minimal(request: Request) -> bool:
    return "return=minimal" in request.headers.get("prefer", "").replace(" ", "")


def fhir_json(resource: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return FhirJSONResponse(resource, status_code=status, headers=headers or None)


def resource_response(
    resource: dict[str, Any], status: int = 200, *, location: str | None = None
) -> JSONResponse:
    """A resource with its ``ETag`` and ``Last-Modified`` (and ``Location`` on create)."""
    headers: dict[str, str] = {}
    meta = resource.get("meta") or {}
    if meta.get("versionId"):
        headers["ETag"] = f'W/"{meta["versionId"]}"'
    if meta.get("lastUpdated"):
        try:
            moment = datetime.fromisoformat(str(meta["lastUpdated"]))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            headers["Last-Modified"] = format_datetime(moment.astimezone(UTC), usegmt=True)
        except ValueError:
            pass
    if location:
        headers["Location"] = location
    return FhirJSONResponse(resource, status_code=status, headers=headers)
