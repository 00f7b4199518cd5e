"""Chart reads and searches: FHIR R4 resources as the chart projection holds them."""

# no `from __future__ import annotations`: FastAPI must see the dependency aliases
# built inside the router factories as real objects, not as strings.
import asyncio
import json
import time
from typing import Annotated

from fastapi import APIRouter, Query, Response

from ehr_events.policy import roles_for
from ehr_events.problems import Problem
from ehr_events.security import TokenVerifier
from ehr_events.web import principal_dependency

from ..config import ProjectionsSettings
from ..fhir import instant
from ..queries import (
    SearchError,
    SearchResult,
    StoredText,
    get_resource_text,
    search_allergies,
    search_patients,
)
from ..readmodels import ReadModels, read
from .schemas import AllergySearch, PatientSearch, ResourcePublic, SearchResults

#: Readable resource types and the permission each needs.
PERMISSIONS = {"Patient": "patient.read", "AllergyIntolerance": "allergy.read"}


class NotFound(Problem):
    status = 404
    title = "Not found"


class InvalidSearch(Problem):
    status = 400
    title = "Invalid search parameter"


def router(verifier: TokenVerifier, models: ReadModels, settings: ProjectionsSettings) -> APIRouter:
    """Routes under ``/chart``; each resource type has the permission of its kind."""
    api = APIRouter(prefix="/chart", tags=["chart"])
    engine = models.chart_engine
    poll = settings.wait_poll_ms / 1000

    async def read_until(
        resource_type: str, resource_id: str, min_version: int | None, wait_ms: int
    ) -> Response:
        # the wait is a sleep in the event loop, not a thread held for up to seconds
        deadline = time.monotonic() + min(wait_ms, settings.max_wait_ms) / 1000
        while True:
            stored = await read(get_resource_text, engine, resource_type, resource_id)
            if stored is not None and (min_version is None or stored.version >= min_version):
                return resource_answer(stored)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(poll, left))
        if stored is not None:
            raise NotFound(f"{resource_type} has not reached the requested version yet.")
        raise NotFound(f"No such {resource_type}.")

    PatientReader = principal_dependency(verifier, roles_for(PERMISSIONS["Patient"]))
    AllergyReader = principal_dependency(verifier, roles_for(PERMISSIONS["AllergyIntolerance"]))
    Wait = Annotated[
        int, Query(ge=0, le=5000, description="How long to wait for the resource, in ms")
    ]
    MinVersion = Annotated[int | None, Query(ge=1, description="Wait for at least this version")]

    @api.get("/Patient/{id}", response_model=ResourcePublic)
    async def read_patient(
        id: str,
        _: PatientReader,  # type: ignore[valid-type]
        min_version: MinVersion = None,
        wait_ms: Wait = 0,
    ) -> Response:
        """Read a Patient, optionally waiting for a version (read-your-writes)."""
        return await read_until("Patient", id, min_version, wait_ms)

    @api.get("/AllergyIntolerance/{id}", response_model=ResourcePublic)
    async def read_allergy(
        id: str,
        _: AllergyReader,  # type: ignore[valid-type]
        min_version: MinVersion = None,
        wait_ms: Wait = 0,
    ) -> Response:
        """Read an AllergyIntolerance, optionally waiting for a version (read-your-writes)."""
        return await read_until("AllergyIntolerance", id, min_version, wait_ms)

    @api.post("/Patient/_search", response_model=SearchResults)
    async def search_patient(
        body: PatientSearch,
        _: PatientReader,  # type: ignore[valid-type]
    ) -> Response:
        """Search Patients by family, given, birthdate and identifier (terms in the body)."""
        try:
            result = await read(
                search_patients,
                engine,
                family=body.family,
                given=body.given,
                birthdate=body.birthdate,
                identifier=body.identifier,
                count=body.count,
                offset=body.offset,
            )
        except SearchError as exc:
            raise InvalidSearch(str(exc)) from None
        return search_answer(result)

    @api.post("/AllergyIntolerance/_search", response_model=SearchResults)
    async def search_allergy(
        body: AllergySearch,
        _: AllergyReader,  # type: ignore[valid-type]
    ) -> Response:
        """Search AllergyIntolerances by patient."""
        result = await read(
            search_allergies, engine, patient=body.patient, count=body.count, offset=body.offset
        )
        return search_answer(result)

    return api


def resource_answer(stored: StoredText) -> Response:
    """A :class:`ResourcePublic` answer around the stored JSON text, spliced in as it is.

    Parsing the text only to encode it again cost a read more than its query.
    """
    updated = json.dumps(instant(stored.last_updated))
    body = f'{{"resource":{stored.json},"version":{stored.version},"last_updated":{updated}}}'
    return Response(content=body.encode("utf-8"), media_type="application/json")


def search_answer(result: SearchResult) -> Response:
    """A :class:`SearchResults` answer around the stored JSON texts, spliced in as they are."""
    body = f'{{"total":{result.total},"resources":[{",".join(result.texts)}]}}'
    return Response(content=body.encode("utf-8"), media_type="application/json")
