"""The chart: each patient's record as current FHIR R4 resources, plus search rows.

One row per resource holds its JSON, version (the aggregate version of the event
that last changed it) and last-updated time. An event older than the stored
version changes nothing, so a reordered or replayed stream cannot roll a
resource back. Search rows (names, identifiers, birth date) are replaced
whenever the demographics change.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
)

from ehr_events.catalogue import IntegrationEvent
from ehr_events.catalogue.records import (
    AllergyRecordedV1,
    AllergyRefutedV1,
    Demographics,
    PatientDemographicsUpdatedV1,
    PatientRegisteredV1,
)
from ehr_events.envelope import Envelope
from ehr_events.projection import Projection

from . import fhir

metadata = MetaData()

chart_resources = Table(
    "chart_resources",
    metadata,
    Column("resource_type", String(40), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("patient_id", String(64), nullable=True),
    Column("json", Text, nullable=False),
    Index("ix_chart_resources_patient", "patient_id", "resource_type"),
    Index("ix_chart_resources_order", "resource_type", "last_updated", "id"),
)

#: Patient-only search fields and what an update must carry over (the MRN).
chart_patients = Table(
    "chart_patients",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("birth_date", Date, nullable=False),
    Column("mrn", String(64), nullable=True),
    Index("ix_chart_patients_birth_date", "birth_date"),
)

#: One row per name part: either ``family_norm`` or ``given_norm`` is set.
chart_patient_names = Table(
    "chart_patient_names",
    metadata,
    Column("patient_id", String(64), nullable=False, index=True),
    Column("family_norm", String(200), nullable=True),
    Column("given_norm", String(200), nullable=True),
    Index("ix_chart_patient_names_family", "family_norm"),
    Index("ix_chart_patient_names_given", "given_norm"),
)

chart_patient_identifiers = Table(
    "chart_patient_identifiers",
    metadata,
    Column("patient_id", String(64), nullable=False, index=True),
    Column("system", String(255), nullable=True),
    Column("value", String(255), nullable=False),
    Index("ix_chart_patient_identifiers_value", "value", "system"),
)


def fold(text: str) -> str:
    """Lower-cased, accent-free form of a name, for case-insensitive starts-with search."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


@dataclass(frozen=True)
class StoredResource:
    resource_type: str
    id: str
    version: int
    last_updated: datetime
    patient_id: str | None
    resource: dict[str, Any]


def utc(moment: datetime) -> datetime:
    """A moment in UTC; naive values (as SQLite returns them) are UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def load(conn: Connection, resource_type: str, resource_id: str) -> StoredResource | None:
    """The stored resource, or None."""
    row = conn.execute(
        select(chart_resources).where(
            chart_resources.c.resource_type == resource_type,
            chart_resources.c.id == resource_id,
        )
    ).first()
    return to_stored(row) if row is not None else None


def to_stored(row: Any) -> StoredResource:
    return StoredResource(
        resource_type=row.resource_type,
        id=row.id,
        version=int(row.version_id),
        last_updated=utc(row.last_updated),
        patient_id=row.patient_id,
        resource=json.loads(row.json),
    )


class ChartProjection(Projection):
    """FHIR R4 Patient and AllergyIntolerance resources from the records events."""

    name = "chart"
    topics: Sequence[str] = ("ehr.records.events",)
    metadata = metadata

    def __init__(
        self, *, mrn_system: str = "urn:ehr:mrn", topics: Sequence[str] | None = None
    ) -> None:
        self.mrn_system = mrn_system
        if topics is not None:
            self.topics = tuple(topics)

    def apply(self, conn: Connection, envelope: Envelope, event: IntegrationEvent) -> None:
        if isinstance(event, PatientRegisteredV1):
            self._patient(conn, envelope, event.patient_id, event.demographics, event.mrn)
        elif isinstance(event, PatientDemographicsUpdatedV1):
            self._patient(conn, envelope, event.patient_id, event.demographics, None)
        elif isinstance(event, AllergyRecordedV1):
            self._allergy_recorded(conn, envelope, event)
        elif isinstance(event, AllergyRefutedV1):
            self._allergy_refuted(conn, envelope, event)
        # any other event of the topic has no place in the chart

    # -- patients --------------------------------------------------------------
    def _patient(
        self,
        conn: Connection,
        envelope: Envelope,
        patient_id: str,
        demographics: Demographics,
        mrn: str | None,
    ) -> None:
        stored = load(conn, "Patient", patient_id)
        version = _version(envelope, stored)
        known_mrn = conn.execute(
            select(chart_patients.c.mrn).where(chart_patients.c.patient_id == patient_id)
        ).scalar_one_or_none()
        if stored is not None and version <= stored.version:
            if mrn is not None and known_mrn is None:
                # the registration arrived after an update: only its MRN is news
                self._late_mrn(conn, stored, mrn)
            return
        mrn = mrn or known_mrn
        resource = fhir.patient(
            patient_id,
            demographics,
            mrn=mrn,
            mrn_system=self.mrn_system,
            version=version,
            last_updated=envelope.time,
        )
        _save(
            conn,
            resource,
            version=version,
            last_updated=envelope.time,
            patient_id=patient_id,
            exists=stored is not None,
        )
        _replace_patient_rows(conn, patient_id, demographics.birth_date, mrn, resource)

    def _late_mrn(self, conn: Connection, stored: StoredResource, mrn: str) -> None:
        resource = dict(stored.resource)
        listed = resource.get("identifier", [])
        if any(fhir.is_mrn(i) for i in listed):
            return
        match = next((i for i in listed if i.get("value") == mrn), None)
        if match is not None:
            rest = [i for i in listed if i is not match]
            resource["identifier"] = [{**match, "type": fhir.MRN_TYPE}, *rest]
        else:
            resource["identifier"] = [fhir.mrn_identifier(self.mrn_system, mrn), *listed]
        _save(
            conn,
            resource,
            version=stored.version,
            last_updated=stored.last_updated,
            patient_id=stored.id,
            exists=True,
        )
        birth_date = date.fromisoformat(resource["birthDate"])
        _replace_patient_rows(conn, stored.id, birth_date, mrn, resource)

    # -- allergies -------------------------------------------------------------
    def _allergy_recorded(
        self, conn: Connection, envelope: Envelope, event: AllergyRecordedV1
    ) -> None:
        stored = load(conn, "AllergyIntolerance", event.allergy_id)
        version = _version(envelope, stored)
        if stored is not None and version <= stored.version:
            if fhir.is_refuted(stored.resource) and "recordedDate" not in stored.resource:
                # the refutation came first: fill in what was recorded, keep it refuted
                recorded = fhir.allergy(
                    event, version=stored.version, last_updated=stored.last_updated
                )
                notes = [*recorded.get("note", []), *stored.resource.get("note", [])]
                merged = fhir.refute(
                    {**recorded, "note": notes}, reason=None, refuted_at=envelope.time
                )
                _save(
                    conn,
                    merged,
                    version=stored.version,
                    last_updated=stored.last_updated,
                    patient_id=event.patient_id,
                    exists=True,
                )
            return
        resource = fhir.allergy(event, version=version, last_updated=envelope.time)
        _save(
            conn,
            resource,
            version=version,
            last_updated=envelope.time,
            patient_id=event.patient_id,
            exists=stored is not None,
        )

    def _allergy_refuted(
        self, conn: Connection, envelope: Envelope, event: AllergyRefutedV1
    ) -> None:
        stored = load(conn, "AllergyIntolerance", event.allergy_id)
        version = _version(envelope, stored)
        if stored is not None and version <= stored.version:
            return
        base = (
            stored.resource
            if stored is not None
            else fhir.refuted_stub(event.allergy_id, event.patient_id)
        )
        resource = fhir.refute(
            {**base, "meta": fhir.meta(version, envelope.time)},
            reason=event.reason,
            refuted_at=event.refuted_at,
        )
        _save(
            conn,
            resource,
            version=version,
            last_updated=envelope.time,
            patient_id=event.patient_id,
            exists=stored is not None,
        )


def _version(envelope: Envelope, stored: StoredResource | None) -> int:
    """The resource version an event brings: its aggregate version."""
    if envelope.aggregateversion is not None:
        return envelope.aggregateversion
    return stored.version + 1 if stored is not None else 1


def _save(
    conn: Connection,
    resource: dict[str, Any],
    *,
    version: int,
    last_updated: datetime,
    patient_id: str | None,
    exists: bool,
) -> None:
    """Insert or replace a resource's row; its meta must already say ``version``."""
    key = {"resource_type": resource["resourceType"], "id": resource["id"]}
    values = {
        "version_id": version,
        "last_updated": utc(last_updated),
        "patient_id": patient_id,
        "json": json.dumps(resource, separators=(",", ":"), ensure_ascii=False),
    }
    if not exists:
        conn.execute(chart_resources.insert().values(**key, **values))
        return
    conn.execute(
        chart_resources.update()
        .where(
            chart_resources.c.resource_type == key["resource_type"],
            chart_resources.c.id == key["id"],
        )
        .values(**values)
    )


def _replace_patient_rows(
    conn: Connection,
    patient_id: str,
    birth_date: date,
    mrn: str | None,
    resource: dict[str, Any],
) -> None:
    for table in (chart_patients, chart_patient_names, chart_patient_identifiers):
        conn.execute(table.delete().where(table.c.patient_id == patient_id))
    conn.execute(
        chart_patients.insert().values(patient_id=patient_id, birth_date=birth_date, mrn=mrn)
    )
    names: set[tuple[str | None, str | None]] = set()
    for name in resource.get("name", []):
        if name.get("family"):
            names.add((fold(name["family"]), None))
        for given in name.get("given", []):
            names.add((None, fold(given)))
    if names:
        conn.execute(
            chart_patient_names.insert(),
            [
                {"patient_id": patient_id, "family_norm": family, "given_norm": given}
                for family, given in sorted(names, key=lambda p: (p[0] or "", p[1] or ""))
            ],
        )
    identifiers = {(i.get("system"), i["value"]) for i in resource.get("identifier", [])}
    if identifiers:
        conn.execute(
            chart_patient_identifiers.insert(),
            [
                {"patient_id": patient_id, "system": system, "value": value}
                for system, value in sorted(identifiers, key=lambda p: (p[0] or "", p[1]))
            ],
        )
