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
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from pydantic_core import to_json as _to_json
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
    bindparam,
    select,
)

from ehr_events.bulk import BulkStatement
from ehr_events.catalogue import IntegrationEvent
from ehr_events.catalogue.records import (
    AllergyRecordedV1,
    AllergyRefutedV1,
    Demographics,
    PatientDemographicsUpdatedV1,
    PatientRegisteredV1,
)
from ehr_events.envelope import Envelope
from ehr_events.projection import IN_CHUNK, Item, Projection

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
    Index("ix_chart_patients_birth_date_patient", "birth_date", "patient_id"),
)

#: Folded name parts compare in code-point order on every database (PostgreSQL's
#: default collation follows the locale), so a prefix search is an index range.
FOLDED = String(200).with_variant(String(200, collation="C"), "postgresql")

#: One row per name part: either ``family_norm`` or ``given_norm`` is set. A name
#: search reads the patients of a range of names from its index alone.
chart_patient_names = Table(
    "chart_patient_names",
    metadata,
    Column("patient_id", String(64), nullable=False, index=True),
    Column("family_norm", FOLDED, nullable=True),
    Column("given_norm", FOLDED, nullable=True),
)


def _name_part_index(part: str) -> Index:
    """The index of one name part's rows (``family`` or ``given``): its folded value,
    then the patient.

    It holds only that part's rows: half the entries of an index of every row (the
    other half, NULL, is never searched), so half the sorting when a rebuild builds
    it. A search's range on the column implies that it is not NULL, which both
    databases take as leave to use the partial index.
    """
    column = chart_patient_names.c[f"{part}_norm"]
    return Index(
        f"ix_chart_patient_names_{part}_partial",
        column,
        chart_patient_names.c.patient_id,
        sqlite_where=column.is_not(None),
        postgresql_where=column.is_not(None),
    )


_name_part_index("family")
_name_part_index("given")

chart_patient_identifiers = Table(
    "chart_patient_identifiers",
    metadata,
    Column("patient_id", String(64), nullable=False, index=True),
    Column("system", String(255), nullable=True),
    Column("value", String(255), nullable=False),
    Index("ix_chart_patient_identifiers_value", "value", "system"),
)

#: Indexes of earlier versions, superseded by the ones above (that add the patient, so
#: a search reads its ids from the index alone, and that leave out the NULLs): the
#: runner drops them from a chart.
_earlier = MetaData()
Table(
    "chart_patients",
    _earlier,
    Column("birth_date", Date),
    Index("ix_chart_patients_birth_date", "birth_date"),
)
Table(
    "chart_patient_names",
    _earlier,
    Column("patient_id", String(64)),
    Column("family_norm", FOLDED),
    Column("given_norm", FOLDED),
    Index("ix_chart_patient_names_family", "family_norm"),
    Index("ix_chart_patient_names_given", "given_norm"),
    # of every row, NULLs too: superseded by the partial ones above
    Index("ix_chart_patient_names_family_patient", "family_norm", "patient_id"),
    Index("ix_chart_patient_names_given_patient", "given_norm", "patient_id"),
)
metadata.info["retired_indexes"] = [i for t in _earlier.sorted_tables for i in t.indexes]


@lru_cache(maxsize=8192)
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


def to_json(resource: dict[str, Any]) -> str:
    """Compact JSON, non-ASCII characters as they are (as ``json.dumps`` with
    ``separators=(",", ":"), ensure_ascii=False`` writes it, several times faster)."""
    return _to_json(resource).decode()


def utc(moment: datetime) -> datetime:
    """A moment in UTC; naive values (as SQLite returns them) are UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def to_stored(row: Any) -> StoredResource:
    return StoredResource(
        resource_type=row.resource_type,
        id=row.id,
        version=int(row.version_id),
        last_updated=utc(row.last_updated),
        patient_id=row.patient_id,
        resource=json.loads(row.json),
    )


#: Statements of a batch, built once: the rows it touches, then its writes in bulk.
_select_resources = select(chart_resources).where(
    chart_resources.c.resource_type == bindparam("b_type"),
    chart_resources.c.id.in_(bindparam("b_ids", expanding=True)),
)
_select_mrns = select(chart_patients.c.patient_id, chart_patients.c.mrn).where(
    chart_patients.c.patient_id.in_(bindparam("b_ids", expanding=True))
)
#: Writes take rows as tuples, in the order of the names given here.
_insert_resource = BulkStatement(
    chart_resources.insert(),
    ("resource_type", "id", "version_id", "last_updated", "patient_id", "json"),
)
_update_resource = BulkStatement(
    chart_resources.update().where(
        chart_resources.c.resource_type == bindparam("b_type"),
        chart_resources.c.id == bindparam("b_id"),
    ),
    ("version_id", "last_updated", "patient_id", "json", "b_type", "b_id"),
)
_delete_patient_rows = [
    BulkStatement(
        table.delete().where(table.c.patient_id == bindparam("b_patient")), ("b_patient",)
    )
    for table in (chart_patients, chart_patient_names, chart_patient_identifiers)
]
_insert_patient = BulkStatement(chart_patients.insert(), ("patient_id", "birth_date", "mrn"))
_insert_name = BulkStatement(
    chart_patient_names.insert(), ("patient_id", "family_norm", "given_norm")
)
_insert_identifier = BulkStatement(
    chart_patient_identifiers.insert(), ("patient_id", "system", "value")
)

Key = tuple[str, str]


class ChartBatch:
    """The chart rows a batch of events touches: read at once, changed in memory, written at once.

    Holds the state one-by-one application would find in the tables at each step:
    every resource the batch reads or writes and each touched patient's MRN.
    """

    def __init__(self) -> None:
        self.resources: dict[Key, StoredResource | None] = {}
        self.mrns: dict[str, str | None] = {}
        #: resources stored before the batch (updated, not inserted)
        self.stored: set[Key] = set()
        #: patients with search rows before the batch (replaced, not just inserted)
        self.indexed: set[str] = set()
        self.changed: dict[Key, StoredResource] = {}
        #: patients whose search rows the batch rewrites: birth date, MRN, resource
        self.search: dict[str, tuple[date, str | None, dict[str, Any]]] = {}

    @classmethod
    def read(
        cls, conn: Connection, patient_ids: Collection[str], allergy_ids: Collection[str]
    ) -> ChartBatch:
        batch = cls()
        for resource_type, ids in (("Patient", patient_ids), ("AllergyIntolerance", allergy_ids)):
            listed = list(ids)
            for i in range(0, len(listed), IN_CHUNK):
                rows = conn.execute(
                    _select_resources, {"b_type": resource_type, "b_ids": listed[i : i + IN_CHUNK]}
                )
                for row in rows:
                    stored = to_stored(row)
                    batch.resources[(resource_type, stored.id)] = stored
                    batch.stored.add((resource_type, stored.id))
            for key in listed:
                batch.resources.setdefault((resource_type, key), None)
        listed = list(patient_ids)
        for i in range(0, len(listed), IN_CHUNK):
            for patient_id, mrn in conn.execute(_select_mrns, {"b_ids": listed[i : i + IN_CHUNK]}):
                batch.mrns[patient_id] = mrn
                batch.indexed.add(patient_id)
        return batch

    def get(self, resource_type: str, resource_id: str) -> StoredResource | None:
        return self.resources.get((resource_type, resource_id))

    def save(
        self,
        resource: dict[str, Any],
        *,
        version: int,
        last_updated: datetime,
        patient_id: str | None,
    ) -> None:
        """Store a resource (its meta must already say ``version``)."""
        stored = StoredResource(
            resource_type=resource["resourceType"],
            id=resource["id"],
            version=version,
            last_updated=utc(last_updated),
            patient_id=patient_id,
            resource=resource,
        )
        key = (stored.resource_type, stored.id)
        self.resources[key] = self.changed[key] = stored

    def index_patient(
        self, patient_id: str, birth_date: date, mrn: str | None, resource: dict[str, Any]
    ) -> None:
        """Replace the patient's search rows (written once, from the last call)."""
        self.mrns[patient_id] = mrn
        self.search[patient_id] = (birth_date, mrn, resource)

    def write(self, conn: Connection) -> None:
        """Write the batch's changes: every row is built first, then written.

        On SQLite the first write takes the database's write lock, held to the
        commit: building rows meanwhile would keep other writers (the processes of
        a rebuild) waiting on Python work.
        """
        # rows in key order: each index page is visited once, not once per row
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        for key, stored in sorted(self.changed.items()):
            body = to_json(stored.resource)
            if key in self.stored:
                updates.append((stored.version, stored.last_updated, stored.patient_id, body, *key))
            else:
                inserts.append((*key, stored.version, stored.last_updated, stored.patient_id, body))
        stale = [(p,) for p in sorted(self.search) if p in self.indexed]
        patients: list[tuple[Any, ...]] = []
        names: list[tuple[Any, ...]] = []
        identifiers: list[tuple[Any, ...]] = []
        for patient_id, (birth_date, mrn, resource) in sorted(self.search.items()):
            patients.append((patient_id, birth_date, mrn))
            names.extend(_name_rows(patient_id, resource))
            identifiers.extend(_identifier_rows(patient_id, resource))
        _insert_resource.execute(conn, inserts)
        _update_resource.execute(conn, updates)
        for delete in _delete_patient_rows:
            delete.execute(conn, stale)
        _insert_patient.execute(conn, patients)
        _insert_name.execute(conn, names)
        _insert_identifier.execute(conn, identifiers)


def _name_rows(
    patient_id: str, resource: dict[str, Any]
) -> list[tuple[str, str | None, str | None]]:
    names: set[tuple[str | None, str | None]] = set()
    for name in resource.get("name", []):
        if name.get("family"):
            names.add((fold(name["family"]), None))
        for given in name.get("given", []):
            names.add((None, fold(given)))
    return [
        (patient_id, family, given)
        for family, given in sorted(names, key=lambda p: (p[0] or "", p[1] or ""))
    ]


def _identifier_rows(
    patient_id: str, resource: dict[str, Any]
) -> list[tuple[str, str | None, str]]:
    identifiers = {(i.get("system"), i["value"]) for i in resource.get("identifier", [])}
    return [
        (patient_id, system, value)
        for system, value in sorted(identifiers, key=lambda p: (p[0] or "", p[1]))
    ]


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
        self.apply_batch(conn, [(envelope, event)])

    def apply_batch(self, conn: Connection, items: Sequence[Item]) -> None:
        """Read the rows the events touch, fold the events in order, write the changes."""
        patient_ids: set[str] = set()
        allergy_ids: set[str] = set()
        for _, event in items:
            if isinstance(event, PatientRegisteredV1 | PatientDemographicsUpdatedV1):
                patient_ids.add(event.patient_id)
            elif isinstance(event, AllergyRecordedV1 | AllergyRefutedV1):
                allergy_ids.add(event.allergy_id)
        if not patient_ids and not allergy_ids:
            return  # any other event of the topic has no place in the chart
        batch = ChartBatch.read(conn, patient_ids, allergy_ids)
        for envelope, event in items:
            if isinstance(event, PatientRegisteredV1):
                self._patient(batch, envelope, event.patient_id, event.demographics, event.mrn)
            elif isinstance(event, PatientDemographicsUpdatedV1):
                self._patient(batch, envelope, event.patient_id, event.demographics, None)
            elif isinstance(event, AllergyRecordedV1):
                self._allergy_recorded(batch, envelope, event)
            elif isinstance(event, AllergyRefutedV1):
                self._allergy_refuted(batch, envelope, event)
        batch.write(conn)

    # -- patients --------------------------------------------------------------
    def _patient(
        self,
        batch: ChartBatch,
        envelope: Envelope,
        patient_id: str,
        demographics: Demographics,
        mrn: str | None,
    ) -> None:
        stored = batch.get("Patient", patient_id)
        version = _version(envelope, stored)
        known_mrn = batch.mrns.get(patient_id)
        if stored is not None and version <= stored.version:
            if mrn is not None and known_mrn is None:
                # the registration arrived after an update: only its MRN is news
                self._late_mrn(batch, stored, mrn)
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
        batch.save(resource, version=version, last_updated=envelope.time, patient_id=patient_id)
        batch.index_patient(patient_id, demographics.birth_date, mrn, resource)

    def _late_mrn(self, batch: ChartBatch, stored: StoredResource, mrn: str) -> None:
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
        batch.save(
            resource, version=stored.version, last_updated=stored.last_updated, patient_id=stored.id
        )
        birth_date = date.fromisoformat(resource["birthDate"])
        batch.index_patient(stored.id, birth_date, mrn, resource)

    # -- allergies -------------------------------------------------------------
    def _allergy_recorded(
        self, batch: ChartBatch, envelope: Envelope, event: AllergyRecordedV1
    ) -> None:
        stored = batch.get("AllergyIntolerance", event.allergy_id)
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
                batch.save(
                    merged,
                    version=stored.version,
                    last_updated=stored.last_updated,
                    patient_id=event.patient_id,
                )
            return
        resource = fhir.allergy(event, version=version, last_updated=envelope.time)
        batch.save(
            resource, version=version, last_updated=envelope.time, patient_id=event.patient_id
        )

    def _allergy_refuted(
        self, batch: ChartBatch, envelope: Envelope, event: AllergyRefutedV1
    ) -> None:
        stored = batch.get("AllergyIntolerance", event.allergy_id)
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
        batch.save(
            resource, version=version, last_updated=envelope.time, patient_id=event.patient_id
        )


def _version(envelope: Envelope, stored: StoredResource | None) -> int:
    """The resource version an event brings: its aggregate version."""
    if envelope.aggregateversion is not None:
        return envelope.aggregateversion
    return stored.version + 1 if stored is not None else 1
