"""The chart projector on the real broker: at-least-once delivery, replay and rebuild."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence

import pytest
from aiokafka import AIOKafkaProducer

from ehr_events.catalogue.identity import UserRegisteredV1
from ehr_events.outbox import ensure_topics
from ehr_events.projection import ProjectionRunner
from projections.chart import ChartProjection
from projections.config import ProjectionsSettings
from projections.queries import get_resource
from projections.readmodels import make_runner

from .builders import (
    Item,
    allergy_recorded,
    allergy_refuted,
    demographics_updated,
    envelope,
    patient_registered,
)
from .test_chart import chart_checksum

PATIENTS = [f"patient-{i}" for i in range(4)]


def story() -> list[Item]:
    """Registrations, updates and allergies of a few patients: 13 events."""
    items: list[Item] = []
    for n, patient in enumerate(PATIENTS):
        items.append(patient_registered(patient, mrn=f"MRN-10{n}"))
        items.append(demographics_updated(patient, version=2, mrn=f"MRN-10{n}", family=f"F{n}"))
    for n, patient in enumerate(PATIENTS[:2]):
        items.append(allergy_recorded(f"allergy-{n}", patient))
        items.append(allergy_refuted(f"allergy-{n}", patient, version=2))
    items.append(allergy_recorded("allergy-9", PATIENTS[3]))
    return items


def markers(tag: str) -> list[Item]:
    """One event per patient's partition that the chart ignores but the runner counts.

    Keyed like the patient's events, each lands after them in its partition: once all
    markers are applied, everything produced before them has been consumed.
    """
    out: list[Item] = []
    for patient in PATIENTS:
        env, event = envelope(
            UserRegisteredV1(user_id=f"{tag}-{patient}", username="marker", roles=("nurse",)),
            subject=f"{tag}-{patient}",
            version=1,
            source="identity",
        )
        out.append((env.model_copy(update={"patientid": patient}), event))
    return out


async def produce(broker: str, topic: str, items: Sequence[Item]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for env, _ in items:
            key, value, headers = env.to_kafka()
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


class Projector:
    """A projector running in the background of one event loop, as its process would."""

    def __init__(self, runner: ProjectionRunner) -> None:
        self.runner = runner
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Projector:
        self.task = asyncio.create_task(self.runner.run(self.stop))
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)

    async def until_applied(self, applied: int, timeout: float = 30) -> None:
        """Wait until the read model holds ``applied`` events (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await asyncio.to_thread(self.runner.applied_count) < applied:
            assert loop.time() < deadline, "projection did not catch up"
            assert self.task is not None and not self.task.done(), "projector stopped"
            await asyncio.sleep(0.1)


class ReplayingRunner(ProjectionRunner):
    """The same read model read by a fresh consumer group: the whole topic again."""

    def group_id(self, generation: int) -> str:
        return f"{super().group_id(generation)}.replay-{uuid.uuid4().hex[:6]}"


class RunnerWithBrokerOnSQLite:
    @pytest.fixture
    def settings(self, sqlite_settings: ProjectionsSettings) -> ProjectionsSettings:
        return sqlite_settings

    @pytest.fixture
    def topic(self, broker: str) -> str:
        # each test its own topic: the session's broker is shared with other suites
        name = f"ehr.projtest{uuid.uuid4().hex[:6]}.events"
        asyncio.run(ensure_topics(broker, [name]))
        return name

    @pytest.fixture
    def runner(
        self, settings: ProjectionsSettings, broker: str, topic: str
    ) -> Iterator[ProjectionRunner]:
        settings = settings.model_copy(update={"kafka_bootstrap": broker})
        runner = make_runner(settings, "chart", projection=ChartProjection(topics=(topic,)))
        yield runner
        runner.engine.dispose()

    def test_redelivered_replayed_and_rebuilt_streams_give_the_same_chart(
        self, runner: ProjectionRunner, broker: str, topic: str
    ) -> None:
        events = story()
        expected = len(events) + len(PATIENTS)

        async def deliver_twice() -> str:
            async with Projector(runner) as projector:
                await produce(broker, topic, events)
                await projector.until_applied(len(events))
                checksum = await asyncio.to_thread(chart_checksum, runner)
                # at-least-once: the whole stream again, then a marker behind it per partition
                await produce(broker, topic, [*events, *markers("redelivery")])
                await projector.until_applied(expected)
            return checksum

        before = asyncio.run(deliver_twice())
        assert runner.applied_count() == expected
        assert chart_checksum(runner) == before
        patient = get_resource(runner.engine, "Patient", PATIENTS[0])
        assert patient is not None and patient.version == 2
        refuted = get_resource(runner.engine, "AllergyIntolerance", "allergy-0")
        assert refuted is not None and refuted.version == 2

        # a replay of the whole topic under a fresh consumer group applies nothing
        replay = ReplayingRunner(
            runner.projection, runner.engine, bootstrap=broker, catalogue=runner.catalogue
        )
        assert asyncio.run(replay._consume(asyncio.Event(), idle_exit_seconds=2)) == 0
        assert chart_checksum(runner) == before

        # a rebuild drops the chart and converges on the same state from both copies
        rebuilt = asyncio.run(runner.rebuild(idle_seconds=2, show_progress=False))
        assert rebuilt == expected
        assert runner.generation() == 2
        assert chart_checksum(runner) == before


class TestRunnerWithBrokerOnSQLite(RunnerWithBrokerOnSQLite):
    pass


@pytest.mark.postgres
class TestRunnerWithBrokerOnPostgreSQL(RunnerWithBrokerOnSQLite):
    @pytest.fixture
    def settings(self, postgres_settings: ProjectionsSettings) -> ProjectionsSettings:
        return postgres_settings
