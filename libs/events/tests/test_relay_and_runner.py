"""The outbox relay and the projection runner against the real broker and databases."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import struct
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import Table, select

from ehr_events.config import ServiceSettings, eventsourcing_env
from ehr_events.db import make_engine, qualified_name, table_schema
from ehr_events.envelope import Envelope
from ehr_events.outbox import OutboxRelay, PositionStore, event_id, make_producer
from ehr_events.projection import (
    ProjectionRunner,
    _runner_metadata,
    projection_offsets,
    projection_state,
)
from ehr_events.testing import settings_for_test

from .builders import (
    Notes,
    NotesProjection,
    NoteTakenV2,
    envelope_for,
    test_catalogue,
    translate,
)


def wal_frames(database: str) -> tuple[int, int]:
    """Frames in a SQLite database's write-ahead log, and how many of them are copied
    into the database file: ``mxFrame`` of the wal-index header and ``nBackfill`` of
    its checkpoint information (SQLite's documented shared-memory layout), read
    without taking a lock or checkpointing anything."""
    header = Path(f"{database}-shm").read_bytes()[:136]
    return struct.unpack_from("=I", header, 16)[0], struct.unpack_from("=I", header, 96)[0]


class RelayAndRunnerOnSQLite:
    """The story of one service's outbox through the broker into a read model."""

    database_url = ""

    @pytest.fixture
    def settings(self, tmp_path: Path) -> ServiceSettings:
        return settings_for_test(ServiceSettings, tmp_path)

    @pytest.fixture
    def topic(self) -> str:
        # each test its own topic, so tests do not see each other's events
        return f"ehr.testing{uuid.uuid4().hex[:6]}.events"

    def make_relay(self, settings: ServiceSettings, broker: str, topic: str) -> OutboxRelay:
        app = Notes(env=eventsourcing_env(settings, "testing"))
        positions = PositionStore(make_engine(settings, "testing"), "testing")
        return OutboxRelay(
            app,
            translate,
            source="testing",
            positions=positions,
            bootstrap=broker,
            topic=topic,
            batch_size=7,
            catalogue=test_catalogue,
        )

    def make_runner(self, settings: ServiceSettings, broker: str, topic: str) -> ProjectionRunner:
        projection = NotesProjection()
        projection.topics = (topic,)
        return ProjectionRunner(
            projection,
            make_engine(settings, "testing", "notes"),
            bootstrap=broker,
            catalogue=test_catalogue,
        )

    @staticmethod
    async def drain(relay: OutboxRelay) -> None:
        try:
            while await relay.run_once():
                pass
        finally:
            await relay.close()

    @staticmethod
    def checksum(runner: ProjectionRunner) -> str:
        with runner.engine.connect() as conn:
            rows = conn.execute(
                select(NotesProjection.counts).order_by(NotesProjection.counts.c.patient_id)
            ).all()
        return hashlib.sha256(json.dumps([list(r) for r in rows]).encode()).hexdigest()

    @staticmethod
    async def run_until(runner: ProjectionRunner, applied: int, timeout: float = 30) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while await asyncio.to_thread(runner.applied_count) < applied:
                assert asyncio.get_running_loop().time() < deadline, "projection did not catch up"
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)

    def notes_relayed(
        self, settings: ServiceSettings, broker: str, topic: str, count: int, text: str = "n"
    ) -> OutboxRelay:
        """``count`` more notes of two patients, taken and relayed to the topic."""
        relay = self.make_relay(settings, broker, topic)
        for i in range(count):
            relay.app.take(f"patient-{i % 2}", text)
        asyncio.run(self.drain(relay))
        return relay

    def ten_notes_projected(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> tuple[OutboxRelay, ProjectionRunner]:
        """Ten notes of two patients relayed, and a runner that has applied them."""
        relay = self.notes_relayed(settings, broker, topic, 10)
        runner = self.make_runner(settings, broker, topic)
        asyncio.run(self.run_until(runner, 10))
        return relay, runner

    def test_relay_publishes_every_note_once_and_stores_its_position(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        relay = self.make_relay(settings, broker, topic)
        notes = [relay.app.take(f"patient-{i % 3}", f"note {i}") for i in range(20)]
        notes[0].scribble()  # a private event: moved past, never published
        relay.app.save(notes[0])
        asyncio.run(self.drain(relay))
        assert relay.positions.get() == relay.app.recorder.max_notification_id() == 21
        assert relay.published == 20

        # a restarted relay starts from the stored position and sends nothing again
        again = self.make_relay(settings, broker, topic)
        assert again.position == 21
        assert asyncio.run(again.run_once()) == 0

        runner = self.make_runner(settings, broker, topic)
        asyncio.run(self.run_until(runner, 20))
        with runner.engine.connect() as conn:
            counts = dict(conn.execute(select(NotesProjection.counts)).all())
        assert counts == {"patient-0": 7, "patient-1": 7, "patient-2": 6}

    def test_envelopes_carry_stable_ids_actor_and_patient_key(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        relay = self.make_relay(settings, broker, topic)
        note = relay.app.take("patient-x", "text")
        notification = relay.app.recorder.select_notifications(start=1, limit=1)[0]
        envelope = relay.envelope_for(notification)
        assert envelope is not None
        assert envelope.id == event_id("testing", note.id, 1)
        assert envelope.key == "patient-x"
        assert (envelope.actor, envelope.actorrole) == ("user-1", "nurse")
        assert envelope.type == "ehr.testing.NoteTaken.v2"
        assert envelope.sequence == notification.id

    def test_position_is_not_stored_when_the_broker_does_not_acknowledge(
        self, settings: ServiceSettings, topic: str
    ) -> None:
        from ehr_events.devinfra import free_port

        relay = self.make_relay(settings, f"127.0.0.1:{free_port()}", topic)
        relay.app.take("patient-1", "never acknowledged")
        with pytest.raises(Exception):  # noqa: B017 - any broker error will do
            asyncio.run(asyncio.wait_for(relay.run_once(), 20))
        assert relay.positions.get() == 0

    def test_redelivered_and_replayed_events_change_nothing_twice(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        relay, runner = self.ten_notes_projected(settings, broker, topic)
        before = self.checksum(runner)

        # the relay forgets its position (a broker refilled from the store): all again
        relay.positions.set(0)
        asyncio.run(self.drain(self.make_relay(settings, broker, topic)))
        asyncio.run(self.run_until(runner, 10, timeout=10))
        assert runner.applied_count() == 10
        assert self.checksum(runner) == before

        # a rebuild replays both copies of the stream and converges on the same state
        rebuilt = asyncio.run(runner.rebuild(idle_seconds=2, show_progress=False))
        assert rebuilt == 10
        assert self.checksum(runner) == before
        assert runner.generation() == 2

    def test_a_read_model_created_afresh_reads_every_event_again(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        _, runner = self.ten_notes_projected(settings, broker, topic)
        before = self.checksum(runner)  # its group has committed every offset
        lost_group = runner.group_id(runner.generation())

        # the read model is lost (a new volume, a dropped schema); the broker keeps
        # the offsets its group committed
        runner.projection.metadata.drop_all(runner.engine)
        _runner_metadata.drop_all(runner.engine)
        afresh = self.make_runner(settings, broker, topic)
        assert afresh.applied_count() == 0 and afresh.generation() == 1
        assert afresh.group_id(1) != lost_group
        asyncio.run(self.run_until(afresh, 10))
        assert self.checksum(afresh) == before

    @staticmethod
    def backup(runner: ProjectionRunner) -> list[tuple[Table, list[dict[str, object]]]]:
        """Every row of the read model and of its runner's tables, as a backup holds them."""
        tables = [*_runner_metadata.sorted_tables, *runner.projection.metadata.sorted_tables]
        with runner.engine.connect() as conn:
            return [(t, [dict(r._mapping) for r in conn.execute(select(t))]) for t in tables]

    @staticmethod
    def restore(runner: ProjectionRunner, backup: list[tuple[Table, list[dict[str, object]]]]):
        with runner.engine.begin() as conn:
            for table, rows in backup:
                conn.execute(table.delete())
                if rows:
                    conn.execute(table.insert(), rows)

    def test_a_read_model_restored_from_a_backup_reads_what_came_after_it(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        _, runner = self.ten_notes_projected(settings, broker, topic)
        backup = self.backup(runner)
        self.notes_relayed(settings, broker, topic, 10, "later")
        asyncio.run(self.run_until(runner, 20))  # its group commits past the backup
        after = self.checksum(runner)

        self.restore(runner, backup)  # same epoch, same group: its offsets run ahead
        restored = self.make_runner(settings, broker, topic)
        assert restored.applied_count() == 10
        asyncio.run(self.run_until(restored, 20))
        assert self.checksum(restored) == after

    def test_a_stored_offset_never_moves_a_consumer_forward(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        _, runner = self.ten_notes_projected(settings, broker, topic)
        assert runner.stored_offsets(), "each batch stores where its partitions continue"
        # the broker lost its log and its groups: the stored offsets name places in a
        # log that is gone, and the group has committed nothing
        with runner.engine.begin() as conn:
            conn.execute(projection_offsets.update().values(next_offset=1000))
            conn.execute(projection_state.update().values(epoch="0123456789ab"))
        self.notes_relayed(settings, broker, topic, 5, "after the loss")
        again = self.make_runner(settings, broker, topic)
        asyncio.run(self.run_until(again, 15))
        assert again.applied_count() == 15

    def test_a_read_model_of_an_earlier_version_keeps_its_group_until_rebuilt(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        runner = self.make_runner(settings, broker, topic)
        # the state table as earlier versions made it, without the epoch
        with runner.engine.begin() as conn:
            table = qualified_name(
                conn.dialect, projection_state, table_schema(conn, projection_state)
            )
            projection_state.drop(conn)
            conn.exec_driver_sql(
                f"CREATE TABLE {table} (projection VARCHAR(64) PRIMARY KEY, "
                "generation INTEGER NOT NULL, applied BIGINT NOT NULL)"
            )
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES ('notes', 3, 0)")
        earlier = self.make_runner(settings, broker, topic)
        assert earlier.group_id(earlier.generation()) == "ehr.projection.notes.g3"
        asyncio.run(earlier.rebuild(idle_seconds=1, show_progress=False))
        assert earlier.generation() == 4
        assert earlier.group_id(4).startswith("ehr.projection.notes.")
        assert earlier.group_id(4) != "ehr.projection.notes.g4"
        # its projector, started again, reads under the rebuilt generation's group
        again = self.make_runner(settings, broker, topic)
        assert again.group_id(again.generation()) == earlier.group_id(4)

    def test_unusable_records_are_skipped_not_fatal(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        relay = self.make_relay(settings, broker, topic)
        relay.app.take("patient-1", "good")

        async def produce_garbage() -> None:
            producer = make_producer(broker)
            await producer.start()
            try:
                await producer.send_and_wait(topic, b"junk", key=b"k", headers=[("ce_id", b"1")])
                bad = Envelope(source="testing", type="ehr.testing.Unknown.v1", data={})
                key, value, headers = bad.to_kafka()
                await producer.send_and_wait(topic, value, key=key, headers=headers)
            finally:
                await producer.stop()

        asyncio.run(self.drain(relay))
        asyncio.run(produce_garbage())
        relay.app.take("patient-1", "after the garbage")
        asyncio.run(self.drain(relay))
        runner = self.make_runner(settings, broker, topic)
        asyncio.run(self.run_until(runner, 2))
        assert runner.applied_count() == 2


class TestRelayAndRunnerOnSQLite(RelayAndRunnerOnSQLite):
    @staticmethod
    async def first_note_applied(relay: OutboxRelay, runner: ProjectionRunner) -> None:
        """One note relayed, and the running runner (joined, caught up) has applied it."""
        relay.app.take("patient-0", "first")
        await relay.run_once()
        while await asyncio.to_thread(runner.applied_count) < 1:
            await asyncio.sleep(0.05)

    @staticmethod
    async def trickle(
        relay: OutboxRelay, runner: ProjectionRunner, count: int = 12, gap: float = 0.04
    ) -> None:
        """``count`` more notes relayed ``gap`` seconds apart, then applied (one more
        in all: the first note's)."""
        for i in range(count):
            relay.app.take(f"patient-{i % 3}", f"note {i}")
            await relay.run_once()
            await asyncio.sleep(gap)
        deadline = asyncio.get_running_loop().time() + 30
        while await asyncio.to_thread(runner.applied_count) < count + 1:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)

    def test_a_lingering_projection_takes_a_trickle_in_few_batches(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        relay = self.make_relay(settings, broker, topic)
        runner = self.make_runner(settings, broker, topic)
        batches: list[int] = []
        apply_batch = runner.projection.apply_batch

        def counting(conn, items):  # type: ignore[no-untyped-def]
            batches.append(len(items))
            apply_batch(conn, items)

        runner.projection.apply_batch = counting  # type: ignore[method-assign]
        runner.projection.linger_seconds = 0.6

        async def story() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            try:
                await self.first_note_applied(relay, runner)
                batches.clear()
                # without the linger, each poll would bring one or two of them
                await self.trickle(relay, runner)
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)
                await relay.close()

        asyncio.run(story())
        assert sum(batches) == 12
        assert len(batches) <= 4, batches

    def test_offsets_are_committed_once_an_interval_while_batches_come_and_when_idle(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        relay = self.make_relay(settings, broker, topic)
        runner = self.make_runner(settings, broker, topic)
        runner.commit_interval_seconds = 60.0

        async def committed() -> int:
            """Records of the topic the runner's group has committed, as the broker says."""
            consumer = AIOKafkaConsumer(
                bootstrap_servers=broker, group_id=runner.group_id(runner.generation())
            )
            await consumer.start()
            try:
                await consumer.topics()
                parts = consumer.partitions_for_topic(topic) or set()
                found = [await consumer.committed(TopicPartition(topic, p)) for p in parts]
                return sum(o or 0 for o in found)
            finally:
                await consumer.stop()

        async def until_committed(count: int) -> None:
            deadline = asyncio.get_running_loop().time() + 30
            while await committed() < count:
                assert asyncio.get_running_loop().time() < deadline, "never committed"
                await asyncio.sleep(0.1)

        async def story() -> tuple[int, int]:
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            try:
                await self.first_note_applied(relay, runner)
                await until_committed(1)  # the first poll that finds nothing commits
                # a note every 20 ms: a batch every poll or two, never an empty poll
                trickling = asyncio.create_task(self.trickle(relay, runner, 40, gap=0.02))
                while await asyncio.to_thread(runner.applied_count) < 15:
                    assert not trickling.done()
                    await asyncio.sleep(0.02)
                applied, during = await asyncio.to_thread(runner.applied_count), await committed()
                assert not trickling.done(), "the trickle ended before the group was asked"
                await trickling
                await until_committed(41)  # the consumer falls idle: it commits it all
                return applied, during
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)
                await relay.close()

        applied, during = asyncio.run(story())
        # committing after every batch, the group would be a batch or two behind
        assert applied >= 15 and during == 1, (applied, during)

    def test_the_log_of_a_burst_is_copied_into_the_file_once_the_consumer_is_idle(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        self.notes_relayed(settings, broker, topic, 10)
        runner = self.make_runner(settings, broker, topic)
        database = str(runner.engine.url.database)

        async def story() -> tuple[int, int]:
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            try:
                deadline = asyncio.get_running_loop().time() + 30
                while await asyncio.to_thread(runner.applied_count) < 10:
                    assert asyncio.get_running_loop().time() < deadline, "did not catch up"
                    await asyncio.sleep(0.05)
                # SQLite alone copies nothing of a log this small: the idle runner does
                while (frames := wal_frames(database))[1] < frames[0]:
                    assert asyncio.get_running_loop().time() < deadline, frames
                    await asyncio.sleep(0.05)
                return frames
            finally:
                stop.set()
                await asyncio.wait_for(task, 15)

        logged, copied = asyncio.run(story())
        assert logged > 0 and copied == logged

    def test_settling_the_log_waits_for_no_reader_and_completes_after_them(
        self, settings: ServiceSettings, broker: str, topic: str
    ) -> None:
        runner = self.make_runner(settings, broker, topic)
        database = str(runner.engine.url.database)
        reader = sqlite3.connect(database)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM projection_state").fetchone()
            note = NoteTakenV2(note_id="n-1", patient_id="p-1", text="t", language="en")
            runner.apply_envelopes([(envelope_for(note, "e-1"), note)])
            # the reader's snapshot predates the write: nothing can be copied yet
            assert runner.settle_wal() is False
            logged, copied = wal_frames(database)
            assert copied < logged
        finally:
            reader.rollback()
            reader.close()
        assert runner.settle_wal() is True
        logged, copied = wal_frames(database)
        assert logged > 0 and copied == logged


@pytest.mark.postgres
class TestRelayAndRunnerOnPostgreSQL(RelayAndRunnerOnSQLite):
    @pytest.fixture
    def settings(self, postgres_service_settings: ServiceSettings) -> ServiceSettings:
        return postgres_service_settings
