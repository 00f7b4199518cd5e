"""The projection runner: Kafka topics into a rebuildable read model.

Each read model is a :class:`Projection` with its own tables and its own consumer
group. Idempotency is keyed by the event's id (stable across republishing by the
relays), recorded in the same transaction as the read-model update, so a
redelivery, a replay or a refilled broker changes nothing twice. Offsets are
committed manually after the transaction, as a resume point only.

A rebuild drops the read model, bumps its *generation* (the consumer group name
carries it, so the new group reads from the start) and replays. A running
projector notices the new generation and rejoins under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from .catalogue import Catalogue, CatalogueError, IntegrationEvent, load_all
from .envelope import Envelope, EnvelopeError

log = logging.getLogger("ehr.projection")

_runner_metadata = MetaData()
processed_events = Table(
    "projection_processed_events",
    _runner_metadata,
    Column("projection", String(64), primary_key=True),
    Column("event_id", String(64), primary_key=True),
)
projection_state = Table(
    "projection_state",
    _runner_metadata,
    Column("projection", String(64), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("applied", BigInteger, nullable=False),
)


class Projection(ABC):
    """A read model: its tables, the topics it follows, and how an event changes it."""

    #: Read-model name; the consumer group is ``ehr.projection.<name>.g<generation>``.
    name: str
    #: Kafka topics it follows.
    topics: Sequence[str]
    #: Its tables (dropped and recreated by a rebuild).
    metadata: MetaData

    @abstractmethod
    def apply(self, conn: Connection, envelope: Envelope, event: IntegrationEvent) -> None:
        """Change the read model for one event, inside the runner's transaction."""


class ProjectionRunner:
    """Applies events to one projection, exactly once per event id."""

    def __init__(
        self,
        projection: Projection,
        engine: Engine,
        *,
        bootstrap: str,
        catalogue: Catalogue | None = None,
        batch_size: int = 500,
    ) -> None:
        self.projection = projection
        self.engine = engine
        self.bootstrap = bootstrap
        self.catalogue = catalogue or load_all()
        self.batch_size = batch_size
        self.setup()

    # -- state -----------------------------------------------------------------
    def setup(self) -> None:
        """Create the runner's and the projection's tables (safe to race with a peer)."""
        for attempt in range(5):
            try:
                _runner_metadata.create_all(self.engine)
                self.projection.metadata.create_all(self.engine)
                with self.engine.begin() as conn:
                    if self._state(conn) is None:
                        conn.execute(
                            projection_state.insert().values(
                                projection=self.projection.name, generation=1, applied=0
                            )
                        )
                return
            except (IntegrityError, ProgrammingError, OperationalError):
                # another process created the same tables or row at the same moment
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _state(self, conn: Connection) -> tuple[int, int] | None:
        row = conn.execute(
            select(projection_state.c.generation, projection_state.c.applied).where(
                projection_state.c.projection == self.projection.name
            )
        ).first()
        return (int(row[0]), int(row[1])) if row else None

    def generation(self) -> int:
        with self.engine.connect() as conn:
            state = self._state(conn)
        return state[0] if state else 1

    def applied_count(self) -> int:
        """How many distinct events the read model holds."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(processed_events)
                    .where(processed_events.c.projection == self.projection.name)
                ).scalar_one()
            )

    def group_id(self, generation: int) -> str:
        return f"ehr.projection.{self.projection.name}.g{generation}"

    def reset(self) -> int:
        """Drop the read model and start a new generation; returns the new generation."""
        self.projection.metadata.drop_all(self.engine)
        with self.engine.begin() as conn:
            conn.execute(
                processed_events.delete().where(
                    processed_events.c.projection == self.projection.name
                )
            )
            generation = (self._state(conn) or (0, 0))[0] + 1
            conn.execute(
                projection_state.update()
                .where(projection_state.c.projection == self.projection.name)
                .values(generation=generation, applied=0)
            )
        self.projection.metadata.create_all(self.engine)
        return generation

    # -- applying --------------------------------------------------------------
    def decode(self, record: ConsumerRecord) -> tuple[Envelope, IntegrationEvent] | None:
        """Envelope and upcast event of a record; None (and a warning) if unusable."""
        try:
            envelope = Envelope.from_kafka(record.headers, record.value)
            event = self.catalogue.upcast(envelope.type, envelope.data)
        except (EnvelopeError, CatalogueError) as exc:
            log.warning(
                "%s: skipping record at %s/%d/%d: %s",
                self.projection.name,
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            return None
        return envelope, event

    def apply_batch(self, records: Sequence[ConsumerRecord], generation: int) -> int | None:
        """Apply records in one transaction; None if the generation moved on."""
        decoded = [d for r in records if (d := self.decode(r)) is not None]
        with self.engine.begin() as conn:
            state = self._state(conn)
            if state is None or state[0] != generation:
                return None
            return self._apply(conn, decoded)

    def apply_envelopes(self, items: Sequence[tuple[Envelope, IntegrationEvent]]) -> int:
        """Apply already decoded events (tests and tools); same idempotency rules."""
        with self.engine.begin() as conn:
            return self._apply(conn, items)

    def _apply(self, conn: Connection, items: Sequence[tuple[Envelope, IntegrationEvent]]) -> int:
        """Apply each event not applied before, recording its id in the same transaction."""
        seen = set(
            conn.execute(
                select(processed_events.c.event_id).where(
                    processed_events.c.projection == self.projection.name,
                    processed_events.c.event_id.in_([e.id for e, _ in items]),
                )
            ).scalars()
        )
        applied = 0
        for envelope, event in items:
            if envelope.id in seen:
                continue
            seen.add(envelope.id)
            self.projection.apply(conn, envelope, event)
            conn.execute(
                processed_events.insert().values(
                    projection=self.projection.name, event_id=envelope.id
                )
            )
            applied += 1
        if applied:
            conn.execute(
                projection_state.update()
                .where(projection_state.c.projection == self.projection.name)
                .values(applied=projection_state.c.applied + applied)
            )
        return applied

    def _apply_with_retry(self, records: Sequence[ConsumerRecord], generation: int) -> int | None:
        """Apply a batch; if another runner applied some of it meanwhile, apply the rest."""
        for attempt in range(3):
            try:
                return self.apply_batch(records, generation)
            except IntegrityError:
                if attempt == 2:
                    raise
        return None

    # -- consuming -------------------------------------------------------------
    def _consumer(self, generation: int) -> AIOKafkaConsumer:
        # subscribe by pattern: topics that do not exist yet are picked up when a
        # relay creates them, and the consumer never creates one itself
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id(generation),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.batch_size,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            metadata_max_age_ms=3000,
        )
        pattern = "^(" + "|".join(re.escape(t) for t in self.projection.topics) + ")$"
        consumer.subscribe(pattern=pattern)
        return consumer

    async def _consume(
        self,
        stop: asyncio.Event,
        *,
        idle_exit_seconds: float | None = None,
        progress: Any = None,
    ) -> int:
        """Consume under the current generation until stopped (or idle); returns applied."""
        generation = await asyncio.to_thread(self.generation)
        consumer = self._consumer(generation)
        await consumer.start()
        total = 0
        # the idle clock starts once partitions are assigned: a group join can take
        # seconds, and an empty poll before it says nothing about the topics
        last_activity: float | None = None
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=self.batch_size)
                records = [r for batch in batches.values() for r in batch]
                if not records:
                    if await asyncio.to_thread(self.generation) != generation:
                        log.info("%s: new generation, rejoining", self.projection.name)
                        return total
                    if last_activity is None and consumer.assignment():
                        last_activity = time.monotonic()
                    if (
                        idle_exit_seconds is not None
                        and last_activity is not None
                        and time.monotonic() - last_activity > idle_exit_seconds
                    ):
                        return total
                    continue
                last_activity = time.monotonic()
                applied = await asyncio.to_thread(self._apply_with_retry, records, generation)
                if applied is None:
                    log.info("%s: new generation, rejoining", self.projection.name)
                    return total
                await consumer.commit()
                total += applied
                if progress is not None:
                    progress.update(len(records))
        finally:
            with contextlib.suppress(Exception):  # closing a broken client
                await consumer.stop()
        return total

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Follow the topics until ``stop`` is set, surviving broker outages."""
        stop = stop or asyncio.Event()
        backoff = 0.5
        while not stop.is_set():
            try:
                await self._consume(stop)
                backoff = 0.5
            except Exception as exc:  # noqa: BLE001 - broker or database away: retry
                log.warning("%s: retrying after %s", self.projection.name, type(exc).__name__)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 5.0)

    async def rebuild(self, *, idle_seconds: float = 3.0, show_progress: bool = True) -> int:
        """Drop the read model and replay every topic from the start.

        Returns how many distinct events the rebuilt read model holds.
        """
        await asyncio.to_thread(self.reset)
        progress = None
        if show_progress:
            from tqdm import tqdm

            progress = tqdm(desc=f"rebuild {self.projection.name}", unit="ev")
        try:
            await self._consume(asyncio.Event(), idle_exit_seconds=idle_seconds, progress=progress)
        finally:
            if progress is not None:
                progress.close()
        return await asyncio.to_thread(self.applied_count)
