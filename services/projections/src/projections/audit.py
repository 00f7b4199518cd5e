"""The audit trail: every command and every access decision, in AuditEvent shape.

An entry says who (user, roles, organisation), did what (FHIR AuditEvent action
C/R/U/D/E and the event's name), to which entity and patient, with what outcome.
It never holds demographics: the detail of each event type is an allow-list of
ids, types and codes, and an event type without one records nothing of its data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Connection, DateTime, Integer, MetaData, String, Table, Text

from ehr_events.catalogue import IntegrationEvent
from ehr_events.catalogue.gateway import AccessDecidedV1
from ehr_events.envelope import Envelope
from ehr_events.projection import Item, Projection

metadata = MetaData()

audit_entries = Table(
    "audit_entries",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False, index=True),
    #: The service that reported it: records, identity, gateway.
    Column("source", String(64), nullable=False),
    Column("event_type", String(128), nullable=False),
    #: ``command`` (a change was recorded) or ``access`` (the gateway decided a request).
    Column("category", String(16), nullable=False),
    #: FHIR AuditEvent.action: C, R, U, D or E.
    Column("action", String(1), nullable=False),
    #: The event's name (PatientRegistered) or the access's verb (read, search).
    Column("subtype", String(64), nullable=False),
    #: success | failure (commands, logins); allowed | denied (access decisions).
    Column("outcome", String(16), nullable=False),
    Column("user_id", String(64), nullable=True, index=True),
    #: Comma-separated, sorted.
    Column("roles", String(255), nullable=True),
    Column("organization_id", String(64), nullable=True),
    Column("patient_id", String(64), nullable=True, index=True),
    Column("entity_type", String(64), nullable=True),
    Column("entity_id", String(64), nullable=True),
    #: Route template of an access (never the raw URL), its method and status.
    Column("route", String(255), nullable=True),
    Column("method", String(16), nullable=True),
    Column("status", Integer, nullable=True),
    Column("network_address", String(64), nullable=True),
    Column("detail", Text, nullable=False),
)

#: FHIR AuditEvent.action of each gateway action.
ACCESS_ACTIONS = {
    "read": "R",
    "search": "E",
    "create": "C",
    "update": "U",
    "delete": "D",
    "login": "E",
    "other": "E",
}

#: The aggregate an event's name is about, by prefix.
ENTITY_TYPES = (
    ("Patient", "Patient"),
    ("Allergy", "AllergyIntolerance"),
    ("Organization", "Organization"),
    ("User", "User"),
    ("Login", "User"),
    ("SigningKey", "SigningKey"),
)

#: Which fields of each event's data may enter the audit trail (ids, codes, never PHI).
DETAIL_FIELDS: dict[str, tuple[str, ...]] = {
    "ehr.records.PatientRegistered.v1": (),
    "ehr.records.PatientDemographicsUpdated.v1": (),
    "ehr.records.AllergyRecorded.v1": ("allergy_id",),
    "ehr.records.AllergyRefuted.v1": ("allergy_id",),
    "ehr.identity.OrganizationRegistered.v1": ("organization_id",),
    "ehr.identity.UserRegistered.v1": ("user_id", "roles", "organization_id"),
    "ehr.identity.UserRolesChanged.v1": ("user_id", "roles"),
    "ehr.identity.UserDisabled.v1": ("user_id",),
    "ehr.identity.LoginSucceeded.v1": ("token_id",),
    "ehr.identity.LoginFailed.v1": ("reason",),
    "ehr.identity.SigningKeyActivated.v1": ("kid", "algorithm"),
    "ehr.identity.SigningKeyRetired.v1": ("kid",),
    "ehr.gateway.AccessDecided.v1": ("decision_id", "reason"),
}

_CREATING = ("Registered", "Recorded", "Created", "Activated")
_LOGINS = ("ehr.identity.LoginSucceeded.v1", "ehr.identity.LoginFailed.v1")

Row = dict[str, Any]


def event_name(event_type: str) -> str:
    """``ehr.records.PatientRegistered.v1`` -> ``PatientRegistered``."""
    parts = event_type.split(".")
    return parts[2] if len(parts) == 4 else event_type


def _roles(roles: Sequence[str] | str | None) -> str | None:
    if not roles:
        return None
    listed = roles.split(",") if isinstance(roles, str) else list(roles)
    return ",".join(sorted({r.strip() for r in listed if r.strip()})) or None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def detail_of(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The allow-listed part of an event's data."""
    return {
        field: data[field]
        for field in DETAIL_FIELDS.get(event_type, ())
        if data.get(field) not in (None, "", [], ())
    }


def command_entry(envelope: Envelope, event: IntegrationEvent) -> Row:
    """The entry of a command's event (records, identity)."""
    data = event.model_dump(mode="json")
    name = event_name(envelope.type)
    login = envelope.type in _LOGINS
    entity_type = next((t for prefix, t in ENTITY_TYPES if name.startswith(prefix)), None)
    return {
        "category": "command",
        "action": "E" if login else ("C" if name.endswith(_CREATING) else "U"),
        "subtype": name,
        "outcome": "failure" if name == "LoginFailed" else "success",
        # a login is done by the user it names, who holds no token yet
        "user_id": envelope.actor or (data.get("user_id") if login else None),
        "roles": _roles(envelope.actorrole),
        "organization_id": envelope.organization,
        "patient_id": envelope.patientid or data.get("patient_id"),
        "entity_type": entity_type,
        "entity_id": envelope.subject,
        "network_address": data.get("client_address"),
        "detail": detail_of(envelope.type, data),
    }


def access_entry(envelope: Envelope, event: AccessDecidedV1) -> Row:
    """The entry of an access decision of the gateway."""
    return {
        "occurred_at": event.decided_at,
        "category": "access",
        "action": ACCESS_ACTIONS.get(event.action, "E"),
        "subtype": event.action,
        "outcome": event.outcome,
        "user_id": event.user_id,
        "roles": _roles(event.roles),
        "organization_id": event.organization_id,
        "patient_id": event.patient_id,
        "route": event.route,
        "method": event.method,
        "status": event.status,
        "network_address": event.client_address,
        "detail": detail_of(envelope.type, event.model_dump(mode="json")),
    }


class AuditProjection(Projection):
    """The audit trail of commands (records, identity) and access decisions (gateway)."""

    name = "audit"
    topics: Sequence[str] = ("ehr.records.events", "ehr.identity.events", "ehr.gateway.events")
    metadata = metadata
    #: Every request adds an access decision: under load, batches of a quarter
    #: second cost a fraction of the CPU of one transaction per few events, and an
    #: idle trail polls the broker four times a second instead of twenty.
    fetch_max_wait_ms = 250
    linger_seconds = 0.25

    def __init__(self, *, topics: Sequence[str] | None = None) -> None:
        if topics is not None:
            self.topics = tuple(topics)

    def apply(self, conn: Connection, envelope: Envelope, event: IntegrationEvent) -> None:
        self.apply_batch(conn, [(envelope, event)])

    def apply_batch(self, conn: Connection, items: Sequence[Item]) -> None:
        """One entry per event, inserted together."""
        conn.execute(_insert_entry, [entry_of(envelope, event) for envelope, event in items])


_insert_entry = audit_entries.insert()
#: Every column, so that the rows of one insert name the same ones (NULL where unset).
_NO_VALUES: Row = {column.name: None for column in audit_entries.columns}


def entry_of(envelope: Envelope, event: IntegrationEvent) -> Row:
    """The audit row of one event."""
    entry: Callable[[Envelope, Any], Row] = (
        access_entry if isinstance(event, AccessDecidedV1) else command_entry
    )
    row: Row = {
        **_NO_VALUES,
        "event_id": envelope.id,
        "occurred_at": envelope.time,
        "source": envelope.source,
        "event_type": envelope.type,
        **entry(envelope, event),
    }
    row["occurred_at"] = _utc(row["occurred_at"])
    row["detail"] = json.dumps(row["detail"], separators=(",", ":"), sort_keys=True)
    return row
