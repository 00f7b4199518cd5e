"""Broker figures: the produce rate with ``acks=all``, a round trip, and the rebuild seed.

The seed is what a rebuild replays: ``PatientRegisteredV1`` envelopes built with
the platform's own :class:`~ehr_events.envelope.Envelope`, published to
``ehr.records.events`` exactly as the records relay publishes them (same key,
headers and JSON value, ``acks="all"``). Timing that publication *is* the
broker's produce rate for messages of the envelopes' size, so the seed doubles
as the produce-rate baseline. Building the messages is not timed.

The development broker is memory-only and has quirks: no ``end_offsets`` or
``seek_to_end`` here; consumers read from the earliest offset of a fresh group.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ehr_events.catalogue import load_all
from ehr_events.catalogue.records import PatientRegisteredV1
from ehr_events.envelope import Envelope
from ehr_events.outbox import ensure_topics, event_id
from ehr_events.projection import FETCH_MAX_WAIT_MS

from .load import FAMILIES, GIVEN

RECORDS_TOPIC = "ehr.records.events"
Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


def registration(i: int, run: str, rng: random.Random, moment: datetime) -> Message:
    """Key, value and headers of the i-th seeded ``PatientRegisteredV1``."""
    patient_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ehr-bench/{run}/{i}"))
    mrn = f"S{run}-{i:08d}"
    data = {
        "patient_id": patient_id,
        "mrn": mrn,
        "demographics": {
            "identifiers": [{"system": "urn:ehr:mrn", "value": mrn}],
            "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVEN)]}],
            "birth_date": f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "sex": rng.choice(("male", "female")),
            "telecom": [{"system": "phone", "value": "+1 555 0100", "use": "home"}],
            "address": [
                {"line": ["12 Lantern Row"], "city": "Springfield", "postal_code": "01010"}
            ],
        },
    }
    envelope = Envelope(
        id=event_id("records", patient_id, 1),
        source="records",
        type=PatientRegisteredV1.event_type,
        subject=patient_id,
        time=moment,
        aggregateversion=1,
        patientid=patient_id,
        actor="bench-seeder",
        actorrole="physician",
        sequence=i + 1,
        data=data,
    )
    return envelope.to_kafka()


def check_seed_message() -> None:
    """The seeded events are valid members of the catalogue (else the rebuild skips them)."""
    key, value, headers = registration(0, "check", random.Random(0), datetime.now(UTC))
    envelope = Envelope.from_kafka(headers, value)
    load_all().upcast(envelope.type, envelope.data)


async def seed(bootstrap: str, count: int, *, chunk: int = 20_000, seed: int = 1) -> dict[str, Any]:
    """Publish ``count`` registrations; returns the timed produce rate and message size.

    The rate is the median of the chunks' rates (``chunk`` messages each): a
    single window over all of them moved by a quarter from run to run, with the
    rebuild's ratio held against it, while the rebuild itself moved by 1%.
    """
    check_seed_message()
    await ensure_topics(bootstrap, [RECORDS_TOPIC])
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=2,
        request_timeout_ms=30000,
        enable_idempotence=False,
    )
    await producer.start()
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    start_time = datetime.now(UTC) - timedelta(days=1)
    produced = 0
    produce_seconds = 0.0
    chunk_rates: list[float] = []
    value_bytes = 0
    header_bytes = 0
    try:
        while produced < count:
            n = min(chunk, count - produced)
            messages = [
                registration(
                    produced + j, run, rng, start_time + timedelta(milliseconds=produced + j)
                )
                for j in range(n)
            ]
            value_bytes += sum(len(v) for _, v, _ in messages)
            header_bytes += sum(len(k) + len(v) for _, _, h in messages for k, v in h)
            started = time.perf_counter()
            futures = [
                await producer.send(RECORDS_TOPIC, value, key=key, headers=headers)
                for key, value, headers in messages
            ]
            await asyncio.gather(*futures)
            seconds = time.perf_counter() - started
            produce_seconds += seconds
            chunk_rates.append(n / seconds)
            produced += n
    finally:
        await producer.stop()
    return {
        "messages": produced,
        "seconds": produce_seconds,
        "per_second": statistics.median(chunk_rates) if chunk_rates else 0.0,
        "chunk_per_second": chunk_rates,
        "mean_value_bytes": value_bytes / max(1, produced),
        "mean_header_bytes": header_bytes / max(1, produced),
    }


async def round_trip(bootstrap: str, *, messages: int = 300, rate: float = 50.0) -> dict[str, Any]:
    """Produce (``acks=all``) to a fresh topic and time each message until a consumer has it.

    The consumer has the projection runner's settings (see
    ``ehr_events.projection.ProjectionRunner._consumer``): this is the floor of the
    event-to-chart lag that the broker and client settings alone impose.
    """
    topic = f"ehr.bench.roundtrip.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic])
    _, value, headers = registration(0, "rt", random.Random(0), datetime.now(UTC))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"ehr.bench.roundtrip.{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        metadata_max_age_ms=3000,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    consumer.subscribe(pattern=f"^{topic.replace('.', '[.]')}$")
    await producer.start()
    await consumer.start()
    sent: dict[bytes, float] = {}
    acks: list[float] = []
    trips: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200)

        async def consume() -> None:
            while len(trips) < messages and time.monotonic() < deadline + 60:
                batches = await consumer.getmany(timeout_ms=200)
                now = time.perf_counter()
                for records in batches.values():
                    for record in records:
                        if record.key in sent:
                            trips.append((now - sent[record.key]) * 1000)

        reader = asyncio.create_task(consume())
        for i in range(messages):
            key = f"rt-{i}".encode()
            sent[key] = time.perf_counter()
            await (await producer.send(topic, value, key=key, headers=headers))
            acks.append((time.perf_counter() - sent[key]) * 1000)
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(reader, timeout=30)
    finally:
        await producer.stop()
        await consumer.stop()
    return {
        "messages": messages,
        "ack_ms": acks,
        "round_trip_ms": trips,
        "ack_p50_ms": statistics.median(acks) if acks else None,
    }
