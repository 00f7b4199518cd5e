"""Domain events to catalogue events, and through the outbox relay to the broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from ehr_events.catalogue import load_all
from ehr_events.db import make_engine
from ehr_events.envelope import Envelope
from ehr_events.outbox import OutboxRelay, PositionStore, topic_for
from ehr_events.testing import ProducerContract, settings_for_test
from records.application import RecordsApplication
from records.config import RecordsSettings
from records.domain import AllergyIntolerance, Patient
from records.relay import translate

from .builders import BIRTH_DATE, FAMILY, actor, allergy, demographics, renamed, unique_mrn

TOPIC = topic_for("records")


def domain_events() -> list:
    """One event of each kind, as the aggregates raise them."""
    patient = Patient.register(unique_mrn(), demographics(), actor())
    patient.update_demographics(renamed("Later"), actor("nurse"), expected_version=1)
    recorded = AllergyIntolerance.record(patient.id, allergy(), actor("physician", "doc-1"))
    recorded.refute("skin test negative", actor("physician"))
    return [*patient.collect_events(), *recorded.collect_events()]


def test_each_domain_event_translates_to_a_valid_catalogue_event() -> None:
    catalogue = load_all()
    registered, updated, recorded, refuted = domain_events()

    integration = [translate(e) for e in (registered, updated, recorded, refuted)]

    assert [type(i).__name__ for i in integration] == [
        "PatientRegisteredV1",
        "PatientDemographicsUpdatedV1",
        "AllergyRecordedV1",
        "AllergyRefutedV1",
    ]
    data = []
    for event in integration:
        assert event is not None
        payload = event.model_dump(mode="json")
        catalogue.validate(event.event_type, payload)
        data.append(payload)
    patient_id = str(registered.originator_id)
    assert data[0]["patient_id"] == patient_id
    assert data[0]["mrn"] == registered.mrn
    assert data[0]["demographics"]["birth_date"] == BIRTH_DATE
    assert data[0]["demographics"]["name"][0]["family"] == FAMILY
    assert data[1]["demographics"]["name"][0]["family"] == "Later"
    assert (data[2]["allergy_id"], data[2]["patient_id"]) == (
        str(recorded.originator_id),
        patient_id,
    )
    assert data[2]["recorder_id"] == "doc-1"
    assert data[2]["recorded_at"] == recorded.recorded_at.isoformat().replace("+00:00", "Z")
    assert (data[3]["patient_id"], data[3]["reason"]) == (patient_id, "skin test negative")


def test_events_read_back_from_the_store_translate_alike(tmp_path: Path) -> None:
    app = RecordsApplication.from_settings(settings_for_test(RecordsSettings, tmp_path))
    try:
        saved = app.register_patient(unique_mrn(), demographics(), actor())
        recorded = app.record_allergy(saved.id, allergy(), actor("physician"))
        app.refute_allergy(recorded.id, 1, None, actor("physician"))
        notifications = app.recorder.select_notifications(start=None, limit=10)
        stored = [translate(app.mapper.to_domain_event(n)) for n in notifications]
    finally:
        app.close()

    catalogue = load_all()
    for event in stored:
        assert event is not None
        catalogue.validate(event.event_type, event.model_dump(mode="json"))
    assert [e.event_type for e in stored if e is not None] == [
        "ehr.records.PatientRegistered.v1",
        "ehr.records.AllergyRecorded.v1",
        "ehr.records.AllergyRefuted.v1",
    ]


def test_other_events_are_kept_private() -> None:
    patient = Patient.register(unique_mrn(), demographics(), actor())

    assert translate(object()) is None
    assert translate(Patient.Snapshot.take(patient)) is None


class TestRecordsHonoursTheCatalogue(ProducerContract):
    """The platform's producer contract, on a story told through the application."""

    source = "records"

    def translate(self, domain_event: Any) -> Any:
        return translate(domain_event)

    def domain_events(self) -> list[Any]:
        app = RecordsApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        try:
            # front desk registers and corrects; a physician records, a nurse refutes
            patient = app.register_patient(unique_mrn(), demographics(), actor("frontdesk"))
            app.update_demographics(patient.id, 1, renamed("Corrected"), actor("frontdesk"))
            recorded = app.record_allergy(patient.id, allergy(), actor("physician"))
            app.refute_allergy(recorded.id, 1, "challenge test negative", actor("nurse"))
            # read back as the relay reads them: from the notification log
            notifications = app.recorder.select_notifications(start=None, limit=100)
            return [app.mapper.to_domain_event(n) for n in notifications]
        finally:
            app.close()


@pytest.mark.kafka
def test_the_relay_publishes_envelopes_keyed_by_patient(broker: str, tmp_path: Path) -> None:
    settings = settings_for_test(RecordsSettings, tmp_path, kafka_bootstrap=broker)
    app = RecordsApplication.from_settings(settings)
    positions = PositionStore(make_engine(settings, "records"), "records")
    try:
        # two patients: one updated, one with an allergy recorded and refuted
        first = app.register_patient(unique_mrn(), demographics(), actor(subject="clerk-1"))
        second = app.register_patient(unique_mrn(), demographics(), actor(subject="clerk-1"))
        app.update_demographics(first.id, 1, renamed("Later"), actor("nurse", "nurse-1"))
        recorded = app.record_allergy(second.id, allergy(), actor("physician", "doc-1"))
        app.refute_allergy(recorded.id, 1, None, actor("physician", "doc-1"))
        last = app.position()

        relay = OutboxRelay(app, translate, source="records", positions=positions, bootstrap=broker)
        asyncio.run(drain(relay))

        # the position is stored once the broker has acknowledged everything
        assert positions.get() == last
        restarted = OutboxRelay(
            app, translate, source="records", positions=positions, bootstrap=broker
        )
        assert restarted.position == last
        assert asyncio.run(restarted.run_once()) == 0

        expected = {str(first.id): 2, str(second.id): 3}
        messages = asyncio.run(
            consume(broker, patients=set(expected), count=sum(expected.values()))
        )
    finally:
        app.close()
        positions.engine.dispose()

    by_patient: dict[str, list[Envelope]] = {}
    for key, envelope in messages:
        assert key == envelope.patientid
        by_patient.setdefault(key, []).append(envelope)
    assert {k: len(v) for k, v in by_patient.items()} == expected
    assert [e.type for e in by_patient[str(first.id)]] == [
        "ehr.records.PatientRegistered.v1",
        "ehr.records.PatientDemographicsUpdated.v1",
    ]
    assert [e.type for e in by_patient[str(second.id)]] == [
        "ehr.records.PatientRegistered.v1",
        "ehr.records.AllergyRecorded.v1",
        "ehr.records.AllergyRefuted.v1",
    ]
    refuted = by_patient[str(second.id)][-1]
    assert (refuted.subject, refuted.aggregateversion) == (str(recorded.id), 2)
    assert (refuted.actor, refuted.actorrole, refuted.organization) == (
        "doc-1",
        "physician",
        "org-test",
    )
    assert refuted.sequence == last
    catalogue = load_all()
    for envelope in (e for envelopes in by_patient.values() for e in envelopes):
        assert envelope.source == "records"
        catalogue.validate(envelope.type, envelope.data)


async def drain(relay: OutboxRelay) -> None:
    try:
        while await relay.run_once():
            pass
    finally:
        # OutboxRelay.run() closes its producer on stop; run_once() leaves it open
        await relay._drop_producer()


async def consume(broker: str, patients: set[str], count: int) -> list[tuple[str, Envelope]]:
    """Read the topic from the start until ``count`` events of ``patients`` are in.

    The broker lives for the whole session: other tests may publish to the topic too.
    """
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=broker,
        group_id=f"records-test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[tuple[str, Envelope]] = []
    deadline = time.monotonic() + 30
    try:
        while len(messages) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    key = record.key.decode() if record.key else ""
                    if key in patients:
                        messages.append((key, Envelope.from_kafka(record.headers, record.value)))
    finally:
        await consumer.stop()
    return messages
