"""Builders for the shared library's tests: a tiny aggregate and its catalogue."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, select

from ehr_events.catalogue import Catalogue, IntegrationEvent
from ehr_events.envelope import Envelope
from ehr_events.projection import Projection

test_catalogue = Catalogue()


@test_catalogue.register
class NoteTakenV1(IntegrationEvent):
    event_type = "ehr.testing.NoteTaken.v1"

    note_id: str
    patient_id: str
    text: str


@test_catalogue.register
class NoteTakenV2(IntegrationEvent):
    event_type = "ehr.testing.NoteTaken.v2"

    note_id: str
    patient_id: str
    text: str
    language: str


@test_catalogue.upcaster("ehr.testing.NoteTaken.v1")
def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "language": "und"}


class Note(Aggregate):
    """A test aggregate: one event per note, and a private one that is never relayed."""

    @event("Taken")
    def __init__(self, patient_id: str, text: str, actor: dict[str, str]) -> None:
        self.patient_id = patient_id
        self.text = text

    @event("Scribbled")
    def scribble(self) -> None:
        """A private event: the translator returns None for it."""


class Notes(Application[UUID]):
    def take(self, patient_id: str, text: str) -> Note:
        note = Note(patient_id, text, actor={"sub": "user-1", "role": "nurse"})
        self.save(note)
        return note


def translate(domain_event: Any) -> IntegrationEvent | None:
    if isinstance(domain_event, Note.Taken):
        return NoteTakenV2(
            note_id=str(domain_event.originator_id),
            patient_id=domain_event.patient_id,
            text=domain_event.text,
            language="en",
        )
    return None


class NotesProjection(Projection):
    """Counts notes per patient; a read model for the runner's tests."""

    name = "notes"
    topics = ("ehr.testing.events",)
    metadata = MetaData()
    counts = Table(
        "notes_per_patient",
        metadata,
        Column("patient_id", String(64), primary_key=True),
        Column("count", Integer, nullable=False),
    )

    def apply(self, conn: Connection, envelope: Envelope, event: IntegrationEvent) -> None:
        assert isinstance(event, NoteTakenV2)
        current = conn.execute(
            select(self.counts.c.count).where(self.counts.c.patient_id == event.patient_id)
        ).scalar_one_or_none()
        if current is None:
            conn.execute(self.counts.insert().values(patient_id=event.patient_id, count=1))
        else:
            conn.execute(
                self.counts.update()
                .where(self.counts.c.patient_id == event.patient_id)
                .values(count=current + 1)
            )


def envelope_for(event: IntegrationEvent, event_id: str | None = None) -> Envelope:
    data = event.model_dump(mode="json")
    return Envelope(
        id=event_id or str(uuid4()),
        source="testing",
        type=event.event_type,
        subject=data.get("note_id"),
        patientid=data.get("patient_id"),
        aggregateversion=1,
        data=data,
    )
