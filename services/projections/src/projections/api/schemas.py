"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

#: One search parameter: comma-separated alternatives, as in a FHIR query string.
SearchParameter = Annotated[str, Field(max_length=256)]
Repeats = Annotated[list[SearchParameter], Field(max_length=10)]
Count = Annotated[int, Field(ge=0, le=500)]
Offset = Annotated[int, Field(ge=0, le=100_000)]


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: Count = 20
    offset: Offset = 0


class PatientSearch(SearchBody):
    """Patient search: every listed parameter must match; commas separate alternatives."""

    family: Repeats = []
    given: Repeats = []
    birthdate: Repeats = []
    identifier: Repeats = []


class AllergySearch(SearchBody):
    """AllergyIntolerance search by patient (``Patient/<id>`` or ``<id>``)."""

    patient: Repeats = []


class ResourcePublic(BaseModel):
    """One resource as the chart holds it."""

    resource: dict[str, Any]
    version: int
    #: The resource's ``meta.lastUpdated``.
    last_updated: str


class SearchResults(BaseModel):
    total: int
    resources: list[dict[str, Any]]


class AuditEntryPublic(BaseModel):
    event_id: str
    occurred_at: datetime
    source: str
    event_type: str
    category: str
    action: str
    subtype: str
    outcome: str
    user_id: str | None
    roles: list[str]
    organization_id: str | None
    patient_id: str | None
    entity_type: str | None
    entity_id: str | None
    route: str | None
    method: str | None
    status: int | None
    network_address: str | None
    detail: dict[str, Any]


class AuditEntries(BaseModel):
    total: int
    entries: list[AuditEntryPublic]


class ProjectionStatus(BaseModel):
    generation: int
    applied: int
    #: the consumer group the read model's projector reads with (lag tools take it)
    group: str
