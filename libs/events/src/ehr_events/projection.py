"""The projection runner: Kafka topics into a rebuildable read model.

Each read model is a :class:`Projection` with its own tables and its own consumer
group. Idempotency is keyed by the event's id (stable across republishing by the
relays), recorded in the same transaction as the read-model update, so a
redelivery, a replay or a refilled broker changes nothing twice. The new events
of a poll reach the projection together (:meth:`Projection.apply_batch`), in one
transaction. Offsets are committed after the transaction, as a resume point
only: at most once a second while batches keep coming, and as soon as a poll finds
nothing new (a consumer that resumes from an older commit skips by id what it
applied since). Each commit is a request for the broker and a round trip the
consumer waits for: a commit after every batch, when events trickle in, is one per
event. Offsets belong to the read model they were committed for: the group's
name carries an *epoch* drawn when the read model's state row is created, so a
read model created afresh (its database lost, its schema dropped) reads every
topic from the start instead of resuming where the lost one stopped. Each batch
also stores, in its own transaction, where each of its partitions continues; a
consumer given a partition whose group committed past that point (a read model
restored from a backup) goes back to it. It never goes forward: after a broker
that lost its log, the stored point belongs to another log, and reading from
the start again costs only time.

A rebuild drops the read model, bumps its *generation* (the consumer group name
carries it, so the new group reads from the start) and replays. A running
projector notices the new generation and rejoins under it. A rebuild may replay
in several processes at once: they join the new generation's group, which splits
the topics' partitions between them (each patient's events stay in one partition,
so in one process, in order). The replay fills tables without their secondary
indexes, which are built once at its end: sorting each index once is a fraction
of keeping it in order row by row, and a write then touches a table's last page
instead of pages all over each index.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import multiprocessing
import os
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    inspect,
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.schema import CreateTable

from .bulk import BulkStatement
from .catalogue import Catalogue, CatalogueError, IntegrationEvent, load_all
from .db import qualified_name, table_schema
from .envelope import Envelope, EnvelopeError

log = logging.getLogger("ehr.projection")

#: A decoded event: its envelope and its payload, upcast to the newest version. The
#: runner's envelopes carry no ``data``: the payload is the event.
Item = tuple[Envelope, IntegrationEvent]

#: Most bound values in one ``IN (...)`` (SQLite builds before 3.32 allow 999 in all).
IN_CHUNK = 500

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
    #: Random, drawn when the row is created: part of the consumer group's name, so a
    #: read model created afresh never inherits the offsets a lost one committed.
    #: NULL in rows of earlier versions until their next rebuild (same group as before).
    Column("epoch", String(32), nullable=True),
)
#: Where each partition continues after the batches the read model holds: written in
#: each batch's transaction, so it always describes the read model's contents.
projection_offsets = Table(
    "projection_offsets",
    _runner_metadata,
    Column("projection", String(64), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
)


_select_seen = select(processed_events.c.event_id).where(
    processed_events.c.projection == bindparam("p_name"),
    processed_events.c.event_id.in_(bindparam("ids", expanding=True)),
)
_insert_processed = BulkStatement(processed_events.insert(), ("projection", "event_id"))
_count_applied = (
    projection_state.update()
    .where(projection_state.c.projection == bindparam("p_name"))
    .values(applied=projection_state.c.applied + bindparam("n"))
)


#: Size of a SQLite read model's write-ahead log past which a runner checkpoints it
#: in full and truncates it (see :meth:`ProjectionRunner.bound_wal`). Each such
#: checkpoint holds the other writers back while it runs: a rebuild of 100 000
#: events ran 4% slower, within the noise, with a limit of 64 MB.
WAL_LIMIT_BYTES = 256 << 20

#: Least time between two offset commits while batches keep coming (see
#: :meth:`ProjectionRunner._consume`).
COMMIT_INTERVAL_SECONDS = 1.0

#: Longest an offset commit may take before the consumer is given up and started
#: again (a commit normally takes milliseconds; see :func:`_commit`).
COMMIT_TIMEOUT_SECONDS = 15.0
#: Longest the last commit of a consumer being stopped may take.
STOP_COMMIT_TIMEOUT_SECONDS = 2.0


class ConsumerStalled(RuntimeError):
    """The consumer stopped making progress with the broker; it is started again."""


#: How long the broker may hold a fetch that has nothing to send (aiokafka's default
#: is 500 ms, which a broker that does not answer as soon as data arrives adds to lag).
FETCH_MAX_WAIT_MS = 50


class Projection(ABC):
    """A read model: its tables, the topics it follows, and how an event changes it."""

    #: Read-model name; the consumer group is ``ehr.projection.<name>.<epoch>.g<generation>``.
    name: str
    #: Kafka topics it follows.
    topics: Sequence[str]
    #: Its tables (dropped and recreated by a rebuild).
    metadata: MetaData
    #: How long a fetch may wait for events (less: less lag, more idle polls).
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
    #: Seconds to wait after a poll that brought fewer events than a batch holds,
    #: so that the next poll brings more at once: each batch costs a transaction
    #: and a commit however small it is. A read model nobody waits for (the audit
    #: trail) trades this much lag for fewer, larger batches; the chart, which
    #: writes wait for, keeps it at zero.
    linger_seconds: float = 0.0

    @abstractmethod
    def apply(self, conn: Connection, envelope: Envelope, event: IntegrationEvent) -> None:
        """Change the read model for one event, inside the runner's transaction."""

    def apply_batch(self, conn: Connection, items: Sequence[Item]) -> None:
        """Change the read model for several events, in order, in one transaction.

        The runner passes only events it has not applied before, each once. The
        result must be what applying them one by one would give; this default
        does exactly that. Projections override it to read and write in bulk.
        """
        for envelope, event in items:
            self.apply(conn, envelope, event)


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
        rebuild_batch_size: int = 5000,
        commit_interval_seconds: float = COMMIT_INTERVAL_SECONDS,
        fetch_max_wait_ms: int | None = None,
        indexes: bool = True,
        wal_limit_bytes: int = WAL_LIMIT_BYTES,
    ) -> None:
        self.projection = projection
        self.engine = engine
        self.bootstrap = bootstrap
        self.catalogue = catalogue or load_all()
        #: records per transaction when following the topics, and when rebuilding
        self.batch_size = batch_size
        self.rebuild_batch_size = rebuild_batch_size
        #: least time between two offset commits while batches keep coming
        self.commit_interval_seconds = commit_interval_seconds
        self.fetch_max_wait_ms = (
            projection.fetch_max_wait_ms if fetch_max_wait_ms is None else fetch_max_wait_ms
        )
        #: on SQLite, the write-ahead log's size past which :meth:`bound_wal` truncates it
        self.wal_limit_bytes = wal_limit_bytes
        #: this read model's epoch (see :meth:`group_id`), read by :meth:`setup`
        self.epoch: str | None = None
        #: how long the last :meth:`rebuild` took to build the indexes at its end
        self.index_seconds = 0.0
        self.setup(indexes=indexes)

    # -- state -----------------------------------------------------------------
    def setup(self, *, indexes: bool = True) -> None:
        """Create the runner's and the projection's tables (safe to race with a peer).

        ``create_all`` creates indexes only with their tables: an index added to a
        table that exists (or left out by a rebuild that did not finish) is created
        here, unless ``indexes`` is false (the replay processes of a rebuild, which
        leaves them to its end: see :meth:`rebuild`).
        """
        for attempt in range(5):
            try:
                _runner_metadata.create_all(self.engine)
                self._add_epoch_column()
                self.projection.metadata.create_all(self.engine)
                if indexes:
                    self.create_indexes()
                with self.engine.begin() as conn:
                    if self._state(conn) is None:
                        conn.execute(
                            projection_state.insert().values(
                                projection=self.projection.name,
                                generation=1,
                                applied=0,
                                epoch=_new_epoch(),
                            )
                        )
                    self.epoch = self._epoch(conn)
                return
            except (IntegrityError, ProgrammingError, OperationalError):
                # another process created the same tables or row at the same moment
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _add_epoch_column(self) -> None:
        """Add ``projection_state.epoch`` to a table made by an earlier version."""
        epoch = projection_state.c.epoch
        with self.engine.begin() as conn:
            schema = table_schema(conn, projection_state)
            columns = inspect(conn).get_columns(projection_state.name, schema=schema)
            if any(c["name"] == epoch.name for c in columns):
                return
            table = qualified_name(conn.dialect, projection_state, schema)
            column_type = epoch.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {epoch.name} {column_type}")

    def _epoch(self, conn: Connection) -> str | None:
        return conn.execute(
            select(projection_state.c.epoch).where(
                projection_state.c.projection == self.projection.name
            )
        ).scalar_one_or_none()

    def _state(self, conn: Connection) -> tuple[int, int] | None:
        row = conn.execute(
            select(projection_state.c.generation, projection_state.c.applied).where(
                projection_state.c.projection == self.projection.name
            )
        ).first()
        return (int(row[0]), int(row[1])) if row else None

    def generation(self) -> int:
        """The read model's generation; also refreshes :attr:`epoch`."""
        with self.engine.connect() as conn:
            state = self._state(conn)
            self.epoch = self._epoch(conn)
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
        """The consumer group of a generation of this read model.

        Offsets the group commits are where a consumer resumes. They describe the
        read model they were committed for: a read model created afresh (its
        database lost, its schema dropped, a new volume) has a new epoch, so a new
        group, which reads every topic from the start.
        """
        if self.epoch is None:
            return f"ehr.projection.{self.projection.name}.g{generation}"
        return f"ehr.projection.{self.projection.name}.{self.epoch}.g{generation}"

    def create_indexes(self) -> None:
        """Create the read model's missing indexes, then drop the ones listed in the
        projection's ``metadata.info["retired_indexes"]`` (superseded ones)."""
        for table in self.projection.metadata.sorted_tables:
            for index in table.indexes:
                index.create(self.engine, checkfirst=True)
        for index in self.projection.metadata.info.get("retired_indexes", ()):
            index.drop(self.engine, checkfirst=True)

    def reset(self, *, indexes: bool = True) -> int:
        """Drop the read model and start a new generation; returns the new generation.

        With ``indexes`` false the tables are created without their indexes, for a
        replay to fill (:meth:`create_indexes` adds them).
        """
        self.projection.metadata.drop_all(self.engine)
        with self.engine.begin() as conn:
            for table in (processed_events, projection_offsets):
                conn.execute(table.delete().where(table.c.projection == self.projection.name))
            generation = (self._state(conn) or (0, 0))[0] + 1
            self.epoch = self._epoch(conn) or _new_epoch()
            conn.execute(
                projection_state.update()
                .where(projection_state.c.projection == self.projection.name)
                .values(generation=generation, applied=0, epoch=self.epoch)
            )
        if indexes:
            self.projection.metadata.create_all(self.engine)
        else:
            with self.engine.begin() as conn:
                for table in self.projection.metadata.sorted_tables:
                    conn.execute(CreateTable(table))
        return generation

    # -- applying --------------------------------------------------------------
    def decode(self, record: ConsumerRecord) -> Item | None:
        """Envelope and upcast event of a record; None (and a warning) if unusable."""
        try:
            # the value is read straight into the event: the envelope keeps no data
            envelope = Envelope.from_kafka_headers(record.headers)
            event = self.catalogue.upcast_json(envelope.type, record.value)
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
        with collector_paused():
            # the batch's objects are dropped when this call returns, before the
            # collector resumes: it never walks them
            applied = self._decode_and_apply(records, generation)
        self.bound_wal()
        return applied

    def _decode_and_apply(self, records: Sequence[ConsumerRecord], generation: int) -> int | None:
        decoded = [d for r in records if (d := self.decode(r)) is not None]
        with self.engine.begin() as conn:
            state = self._state(conn)
            if state is None or state[0] != generation:
                return None
            applied = self._apply(conn, decoded)
            # after the projection's writes: on SQLite the first write takes the lock
            self._store_offsets(conn, records)
            return applied

    def _store_offsets(self, conn: Connection, records: Sequence[ConsumerRecord]) -> None:
        """Record where each partition of the batch continues, in the batch's transaction."""
        following: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            following[key] = max(following.get(key, 0), record.offset + 1)
        if not following:
            return
        insert = _dialect_insert(conn)(projection_offsets)
        upsert = insert.on_conflict_do_update(
            index_elements=[
                projection_offsets.c.projection,
                projection_offsets.c.topic,
                projection_offsets.c.partition,
            ],
            set_={"next_offset": insert.excluded.next_offset},
        )
        # in one order everywhere: two consumers briefly sharing partitions during a
        # rebalance lock the rows in the same order, never in a cycle
        conn.execute(
            upsert,
            [
                {"projection": self.projection.name, "topic": t, "partition": p, "next_offset": o}
                for (t, p), o in sorted(following.items())
            ],
        )

    def stored_offsets(self) -> dict[TopicPartition, int]:
        """Where each partition continues after what the read model holds."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    projection_offsets.c.topic,
                    projection_offsets.c.partition,
                    projection_offsets.c.next_offset,
                ).where(projection_offsets.c.projection == self.projection.name)
            ).all()
        return {TopicPartition(t, int(p)): int(o) for t, p, o in rows}

    async def _resume_within_contents(
        self, consumer: AIOKafkaConsumer, assigned: Iterable[TopicPartition]
    ) -> None:
        """Seek each newly assigned partition back to where the read model's contents end,
        wherever its group committed past that point; never forward.

        The group's commits run ahead of the read model when the read model was
        restored from a backup (and, briefly, never otherwise: a batch's offsets are
        committed after its transaction). Resuming from them would leave out every
        event between the backup and the restore.
        """
        stored = await asyncio.to_thread(self.stored_offsets)
        wanted = [tp for tp in assigned if tp in stored]
        committed = await asyncio.gather(*(consumer.committed(tp) for tp in wanted))
        for tp, group_offset in zip(wanted, committed, strict=True):
            if group_offset is not None and stored[tp] < group_offset:
                log.warning(
                    "%s: %s/%d resumes at offset %d, where the read model's contents end, "
                    "not at its group's %d",
                    self.projection.name,
                    tp.topic,
                    tp.partition,
                    stored[tp],
                    group_offset,
                )
                consumer.seek(tp, stored[tp])

    def bound_wal(self) -> bool:
        """On SQLite, checkpoint the write-ahead log into the database and truncate it
        once it outgrows ``wal_limit_bytes``; True if it did. Called after each batch.

        SQLite's own checkpoint after a commit never waits for readers, and rewinds
        the log only when no reader is using it. With several writers (a rebuild's
        processes) and readers (progress, the API) always overlapping, that moment
        may not come: the log of a rebuild of a million events grew to 3.2 GB beside
        a database of 1.3 GB. A ``TRUNCATE`` checkpoint waits (as long as the busy
        timeout) for the writer and for readers of the log to finish, and readers
        that start meanwhile read the database file.
        """
        if not self._is_sqlite_file():
            return False
        try:
            size = os.path.getsize(f"{self.engine.url.database}-wal")
        except OSError:
            return False
        if size <= self.wal_limit_bytes:
            return False
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return True

    def settle_wal(self) -> bool:
        """On SQLite, copy the write-ahead log's pages into the database file, without
        waiting for anyone (a ``PASSIVE`` checkpoint); True once none is left behind
        (always on other databases). Called when the consumer falls idle after
        applying.

        SQLite checkpoints by itself only as a writer commits, and cannot copy a page
        a reader's snapshot still needs. The pages left in the log after the last
        batch of a burst stay there until the next write: meanwhile every reader
        looks each page up in the log's index and reads the log's pages into its
        own small cache instead of the memory-mapped file. A name search over a
        chart of 20 000 patients took 800 µs of CPU with 170 MB of log left so (a
        reader's snapshot had pinned it during the burst), 515 µs once it was
        copied; with the few megabytes SQLite's own checkpoint leaves, no
        difference showed. Once the log is all copied, readers read the database
        file only, and the next write starts the log afresh.

        A checkpoint is only an optimisation: a database that refuses it (busy,
        away) gets another at the next idle poll, and the consumer carries on.
        """
        if not self._is_sqlite_file():
            return True
        try:
            with self.engine.connect() as conn:
                busy, log_frames, copied = conn.exec_driver_sql(
                    "PRAGMA wal_checkpoint(PASSIVE)"
                ).one()
        except OperationalError as exc:
            log.info("%s: log not settled (%s)", self.projection.name, type(exc).__name__)
            return False
        return not busy and copied >= log_frames

    def _is_sqlite_file(self) -> bool:
        if self.engine.dialect.name != "sqlite":
            return False
        database = self.engine.url.database or ""
        return database not in ("", ":memory:") and not database.startswith("file:")

    def apply_envelopes(self, items: Sequence[Item]) -> int:
        """Apply already decoded events (tests and tools); same idempotency rules."""
        with collector_paused(), self.engine.begin() as conn:
            applied = self._apply(conn, items)
        self.bound_wal()
        return applied

    def _apply(self, conn: Connection, items: Sequence[Item]) -> int:
        """Apply each event not applied before, recording its id in the same transaction."""
        name = self.projection.name
        if conn.dialect.name == "postgresql":
            # psycopg prepares a statement run five times, and PostgreSQL then plans
            # it once for any values: for the seen-id lookup below, a plan that reads
            # every id of the projection, slower with each batch of a rebuild
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
        ids = list({envelope.id for envelope, _ in items})
        seen: set[str] = set()
        for i in range(0, len(ids), IN_CHUNK):
            seen.update(
                conn.execute(_select_seen, {"p_name": name, "ids": ids[i : i + IN_CHUNK]}).scalars()
            )
        fresh: list[Item] = []
        for item in items:
            if item[0].id not in seen:
                seen.add(item[0].id)
                fresh.append(item)
        if not fresh:
            return 0
        # built before the projection writes: on SQLite its first write takes the lock
        processed = [(name, i) for i in sorted(e.id for e, _ in fresh)]
        self.projection.apply_batch(conn, fresh)
        _insert_processed.execute(conn, processed)
        conn.execute(_count_applied, {"p_name": name, "n": len(fresh)})
        return len(fresh)

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
    def _consumer(
        self, generation: int, batch_size: int, listener: ConsumerRebalanceListener | None = None
    ) -> AIOKafkaConsumer:
        # subscribe by pattern: topics that do not exist yet are picked up when a
        # relay creates them, and the consumer never creates one itself
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id(generation),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=batch_size,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            metadata_max_age_ms=3000,
            # how long the broker may hold a fetch when it has nothing to send: a
            # broker that does not answer as soon as data arrives (the development
            # one) adds up to this much to the event-to-read-model lag
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        pattern = "^(" + "|".join(re.escape(t) for t in self.projection.topics) + ")$"
        consumer.subscribe(pattern=pattern, listener=listener)
        return consumer

    async def _consume(
        self,
        stop: asyncio.Event,
        *,
        idle_exit_seconds: float | None = None,
        progress: Any = None,
        batch_size: int | None = None,
        linger: float | None = None,
    ) -> int:
        """Consume under the current generation until stopped (or idle); returns applied.

        Fetching overlaps applying: while one batch is applied (in a thread), the
        next is polled. The offsets of applied batches are committed once
        ``commit_interval_seconds`` has passed since the last commit, when a poll
        finds nothing new, and when the consumer is stopped.
        """
        batch_size = batch_size or self.batch_size
        generation = await asyncio.to_thread(self.generation)
        group = _GroupMembership()
        consumer = self._consumer(generation, batch_size, group)
        group.on_assigned = functools.partial(self._resume_within_contents, consumer)
        await consumer.start()
        total = 0
        # the idle clock starts once the group has assigned this consumer its
        # partitions (none, if other consumers of the group hold them all), and
        # again after every rebalance: a join can take seconds, and an empty poll
        # meanwhile says nothing about the topics
        last_activity: float | None = None
        applying: asyncio.Future[int | None] | None = None
        applying_offsets: dict[TopicPartition, int] = {}
        # whether the read model's write-ahead log is all in its file (see settle_wal)
        wal_settled = True
        applying_size = 0
        linger = self.projection.linger_seconds if linger is None else linger
        short_poll = False
        # offsets of applied batches not committed yet, and when the last commit was
        uncommitted: dict[TopicPartition, int] = {}
        committed_at = time.monotonic()
        try:
            while not stop.is_set():
                if short_poll and linger > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=linger)
                batches = await consumer.getmany(timeout_ms=200, max_records=batch_size)
                if group.error is not None:
                    # where to resume is unknown: nothing of this poll is applied
                    raise group.error
                records = [r for batch in batches.values() for r in batch]
                short_poll = 0 < len(records) < batch_size
                done: tuple[int, dict[TopicPartition, int], int] | None = None
                if applying is not None:
                    applied = await applying
                    applying = None
                    if applied is None:
                        log.info("%s: new generation, rejoining", self.projection.name)
                        return total
                    done = (applied, applying_offsets, applying_size)
                if records:
                    last_activity = time.monotonic()
                    applying = asyncio.ensure_future(
                        asyncio.to_thread(self._apply_with_retry, records, generation)
                    )
                    applying_offsets = _next_offsets(batches)
                    applying_size = len(records)
                if done is not None:
                    applied, offsets, size = done
                    uncommitted.update(offsets)
                    if time.monotonic() - committed_at >= self.commit_interval_seconds:
                        await _commit(consumer, uncommitted)
                        uncommitted, committed_at = {}, time.monotonic()
                    total += applied
                    if applied:
                        wal_settled = False
                    if progress is not None:
                        progress.update(size)
                if group.rebalanced:
                    group.rebalanced = False
                    last_activity = None
                if records or done is not None:
                    continue
                if uncommitted:
                    # a poll found nothing new: where the consumer is goes to the group now
                    await _commit(consumer, uncommitted)
                    uncommitted, committed_at = {}, time.monotonic()
                if not wal_settled:
                    # a poll found nothing new: the burst is over, for now
                    wal_settled = await asyncio.to_thread(self.settle_wal)
                if await asyncio.to_thread(self.generation) != generation:
                    log.info("%s: new generation, rejoining", self.projection.name)
                    return total
                if last_activity is None and group.assigned:
                    last_activity = time.monotonic()
                if (
                    idle_exit_seconds is not None
                    and last_activity is not None
                    and time.monotonic() - last_activity > idle_exit_seconds
                ):
                    return total
            if uncommitted:
                # stopped: what was applied is where the group resumes; a broker that
                # does not answer soon is not waited for (the commit is only a shortcut)
                with contextlib.suppress(ConsumerStalled):
                    await _commit(consumer, uncommitted, timeout=STOP_COMMIT_TIMEOUT_SECONDS)
        finally:
            if applying is not None:
                # a transaction is never left running behind a stopped consumer; its
                # offsets stay uncommitted, and the batch is read (and skipped) again
                with contextlib.suppress(Exception):
                    await applying
            await _stop(consumer, self.projection.name)
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

    async def replay(self, *, idle_seconds: float = 3.0, progress: Any = None) -> int:
        """Consume the current generation's group until its partitions fall idle.

        What one rebuild process does, in large batches and without lingering (a
        replay reads as fast as it can apply). Returns the events it applied.
        """
        return await self._consume(
            asyncio.Event(),
            idle_exit_seconds=idle_seconds,
            progress=progress,
            batch_size=max(self.batch_size, self.rebuild_batch_size),
            linger=0.0,
        )

    async def rebuild(
        self,
        *,
        idle_seconds: float = 3.0,
        show_progress: bool = True,
        workers: int = 1,
        factory: Callable[[], ProjectionRunner] | None = None,
    ) -> int:
        """Drop the read model and replay every topic from the start.

        With ``workers`` above 1 the replay runs in that many processes, each
        building its runner with ``factory`` (picklable: it is sent to spawned
        processes, and which must leave the indexes to this process); the group
        splits the partitions between them. The indexes are created once the
        replay ends, or fails. Returns how many distinct events the rebuilt read
        model holds.
        """
        if workers > 1 and factory is None:
            raise ValueError("a rebuild in several processes needs a runner factory")
        await asyncio.to_thread(self.reset, indexes=False)
        progress = None
        if show_progress:
            from tqdm import tqdm

            progress = tqdm(desc=f"rebuild {self.projection.name}", unit="ev")
        try:
            if workers > 1 and factory is not None:
                await self._replay_in_processes(factory, workers, idle_seconds, progress)
            else:
                await self.replay(idle_seconds=idle_seconds, progress=progress)
        except BaseException:
            # also after a failure the read model gets its indexes; should that fail
            # too (the database is away), the replay's error is the one raised
            try:
                await self._build_indexes()
            except Exception as exc:  # noqa: BLE001 - the replay's error matters more
                log.error(
                    "%s: indexes not built after the failed rebuild (%s): the next "
                    "projector or API start builds them",
                    self.projection.name,
                    type(exc).__name__,
                )
            raise
        finally:
            if progress is not None:
                progress.close()
        await self._build_indexes()
        return await asyncio.to_thread(self.applied_count)

    async def _build_indexes(self) -> None:
        started = time.monotonic()
        await asyncio.to_thread(self.create_indexes)
        self.index_seconds = time.monotonic() - started
        log.info("%s: indexes built in %.2fs", self.projection.name, self.index_seconds)

    def _applied_counter(self) -> int:
        """The running count of applied events (cheap, unlike :meth:`applied_count`)."""
        with self.engine.connect() as conn:
            state = self._state(conn)
        return state[1] if state else 0

    async def _replay_in_processes(
        self,
        factory: Callable[[], ProjectionRunner],
        workers: int,
        idle_seconds: float,
        progress: Any,
    ) -> None:
        """Run ``workers`` replay processes to their end; any failure stops them all."""
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(
                target=replay_worker,
                args=(factory, idle_seconds),
                name=f"rebuild-{self.projection.name}-{i + 1}",
            )
            for i in range(workers)
        ]
        shown = 0
        try:
            for process in processes:
                process.start()
            while any(p.is_alive() for p in processes):
                failed = [p for p in processes if p.exitcode not in (None, 0)]
                if failed:
                    break
                await asyncio.sleep(0.5)
                if progress is not None:
                    applied = await asyncio.to_thread(self._applied_counter)
                    progress.update(applied - shown)
                    shown = applied
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
                process.join()
        failed = [p for p in processes if p.exitcode != 0]
        if failed:
            raise RuntimeError(
                f"rebuild of {self.projection.name}: process {failed[0].name} "
                f"exited with {failed[0].exitcode}"
            )


def _new_epoch() -> str:
    return uuid.uuid4().hex[:12]


def replay_worker(factory: Callable[[], ProjectionRunner], idle_seconds: float) -> None:
    """The body of one rebuild process (see :meth:`ProjectionRunner.rebuild`)."""
    from .process import event_loop_factory

    runner = factory()
    with asyncio.Runner(loop_factory=event_loop_factory()) as loop:
        applied = loop.run(runner.replay(idle_seconds=idle_seconds))
    log.info(
        "%s: rebuild process %d applied %d events", runner.projection.name, os.getpid(), applied
    )


async def partition_count(bootstrap: str, topics: Sequence[str]) -> int:
    """How many partitions the topics have together (0 for topics not created yet)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        existing = await consumer.topics()
        return sum(len(consumer.partitions_for_topic(t) or ()) for t in topics if t in existing)
    finally:
        await consumer.stop()


class _GroupMembership(ConsumerRebalanceListener):  # type: ignore[misc]
    """Whether the group has assigned this consumer its share yet, and rebalances.

    ``on_assigned`` runs on each assignment, before anything is fetched: where it
    seeks, the consumer starts. The client only logs what a listener raises, so
    its error is kept in ``error`` for the consuming loop to raise.
    """

    def __init__(self) -> None:
        self.assigned = False
        self.rebalanced = False
        self.on_assigned: Callable[[Any], Awaitable[None]] | None = None
        self.error: Exception | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.assigned = False
        self.rebalanced = True

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned = True
        self.rebalanced = True
        if self.on_assigned is not None and assigned:
            try:
                await self.on_assigned(assigned)
            except Exception as exc:  # noqa: BLE001 - raised by the consuming loop
                self.error = exc


class _CollectorPause:
    """The cyclic garbage collector paused while any batch is applied (in any thread).

    A batch's objects (records, envelopes, events, resources, rows) all live until
    its transaction ends, and they form no cycles: every collection while they are
    built walks all of them again and frees nothing. With thousands of events a
    batch (a rebuild) that is a fifth of the CPU. Reference counting still frees
    everything the batch drops; any cycle it leaves is collected once the collector
    resumes, which it does as soon as no batch is being applied.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches = 0
        self._resume = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._batches == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._batches += 1
        try:
            yield
        finally:
            with self._lock:
                self._batches -= 1
                if self._batches == 0 and self._resume:
                    gc.enable()


collector_paused = _CollectorPause()


def _dialect_insert(conn: Connection) -> Any:
    """The ``INSERT`` construct of the connection's dialect (for ``ON CONFLICT``)."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialects = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
    try:
        return dialects[conn.dialect.name]
    except KeyError:
        raise ValueError(f"read models on {conn.dialect.name} are not supported") from None


def _next_offsets(batches: dict[TopicPartition, list[ConsumerRecord]]) -> dict[TopicPartition, int]:
    """The resume point after a poll: each partition's offset after its last record."""
    return {tp: records[-1].offset + 1 for tp, records in batches.items() if records}


async def _commit(
    consumer: AIOKafkaConsumer,
    offsets: dict[TopicPartition, int],
    timeout: float = COMMIT_TIMEOUT_SECONDS,
) -> None:
    """Commit the offsets of partitions still assigned to this consumer.

    Offsets are a resume point only. When the group has rebalanced meanwhile (a
    member joined or left, or the broker forgot this member), the commit is
    refused; the consumer rejoins by itself and whoever gets the partitions
    resumes from the last commit, skipping by id the events applied since. So
    a refused commit is no reason to drop the consumer.

    A commit that does not end within ``timeout`` raises :class:`ConsumerStalled`:
    the client retries a commit for as long as the broker's answers look
    temporary, and after a broker restart a projector was seen waiting on one
    for minutes, applying nothing. Its runner starts a new consumer instead.
    """
    assigned = consumer.assignment()
    offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
    if not offsets:
        return
    try:
        await asyncio.wait_for(consumer.commit(offsets), timeout)
    except (CommitFailedError, IllegalStateError) as exc:
        log.info("offsets not committed (%s): the group rebalanced", type(exc).__name__)
    except TimeoutError:
        raise ConsumerStalled(f"an offset commit took more than {timeout:g}s") from None


async def _stop(consumer: AIOKafkaConsumer, name: str, timeout: float = 10.0) -> None:
    """Stop a consumer; never wait for it forever.

    aiokafka's fetcher swallows its own cancellation when it is stopped while it
    drops a lost assignment (which happens when ``stop()`` follows the loss of
    the group membership, e.g. after a broker restart): ``stop()`` then awaits
    it forever, and the runner with it. Cancelling the stop once cancels the
    fetcher again, and the stop completes.
    """
    stopping = asyncio.ensure_future(consumer.stop())
    for _ in range(2):
        done, _pending = await asyncio.wait({stopping}, timeout=timeout)
        if done:
            if not stopping.cancelled() and stopping.exception() is not None:
                log.info("%s: consumer stopped with %s", name, type(stopping.exception()).__name__)
            return
        log.warning("%s: consumer still stopping after %.0fs, cancelling its stop", name, timeout)
        stopping.cancel()
    log.warning("%s: consumer abandoned: it did not stop", name)
