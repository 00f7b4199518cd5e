"""The gateway's outbox relay publishes its access decisions through the real broker."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from ehr_events.catalogue import load_all
from ehr_events.db import make_engine
from ehr_events.envelope import Envelope
from ehr_events.outbox import OutboxRelay, PositionStore
from gateway.access import Decision, open_gateway_application
from gateway.relay import translate

from .builders import gateway_settings


async def consume(broker: str, topic: str, count: int, timeout: float = 20) -> list[Envelope]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, auto_offset_reset="earliest")
    await consumer.start()
    envelopes: list[Envelope] = []
    try:
        async with asyncio.timeout(timeout):
            while len(envelopes) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    envelopes += [Envelope.from_kafka(r.headers, r.value) for r in records]
    finally:
        await consumer.stop()
    return envelopes


@pytest.mark.kafka
def test_decisions_are_published_keyed_by_patient_and_the_position_kept(
    tmp_path: Path, broker: str
) -> None:
    settings = gateway_settings(tmp_path, "http://127.0.0.1:9")
    topic = f"ehr.gateway{uuid.uuid4().hex[:6]}.events"
    app = open_gateway_application(settings)
    decisions = [
        Decision(
            "GET", "/fhir/Patient/{id}", "read", "allowed", 200, user_id="u-1", patient_id="p-1"
        ),
        Decision("GET", "/fhir/Patient", "search", "denied", 401, reason="token expired"),
    ]
    app.record_decisions(decisions)
    positions = PositionStore(make_engine(settings, "gateway"), "gateway")

    async def relay_all() -> list[Envelope]:
        relay = OutboxRelay(
            app, translate, source="gateway", positions=positions, bootstrap=broker, topic=topic
        )
        try:
            while await relay.run_once():
                pass
        finally:
            await relay.close()
        return await consume(broker, topic, 2)

    envelopes = asyncio.run(relay_all())
    app.close()

    assert [e.type for e in envelopes] == ["ehr.gateway.AccessDecided.v1"] * 2
    by_id = {e.data["decision_id"]: e for e in envelopes}
    read = by_id[str(decisions[0].decision_id)]
    assert (read.source, read.patientid, read.key, read.actor) == ("gateway", "p-1", "p-1", "u-1")
    for envelope in envelopes:
        load_all().validate(envelope.type, envelope.data)
    assert positions.get() == 2
