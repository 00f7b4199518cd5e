"""Integration events of the gateway: every access decision it takes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from . import IntegrationEvent, catalogue


@catalogue.register
class AccessDecidedV1(IntegrationEvent):
    """Who asked for what, about which patient, and whether it was allowed.

    ``route`` is the route template (``/fhir/Patient/{id}``), never the raw URL,
    so no query string (and no PHI a search may carry) reaches the log.
    """

    event_type = "ehr.gateway.AccessDecided.v1"

    decision_id: str
    user_id: str | None = None
    roles: tuple[str, ...] = ()
    organization_id: str | None = None
    patient_id: str | None = None
    method: str
    route: str
    action: Literal["read", "search", "create", "update", "delete", "login", "other"]
    outcome: Literal["allowed", "denied"]
    status: int
    reason: str | None = None
    client_address: str | None = None
    decided_at: datetime
