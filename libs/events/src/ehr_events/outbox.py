"""The outbox relay: from a service's notification log to its Kafka topic.

The ``eventsourcing`` notification log is the transactional outbox: an event is in
it exactly when its aggregate change is committed. The relay reads notifications
after its stored position, translates each domain event into an integration event
of the catalogue (or skips it, for events that stay private), produces them with
``acks="all"`` and stores the new position only once the broker has acknowledged
all of them. Killed at any moment, it restarts from the stored position: nothing
is lost, and what is sent twice carries the same event id, so consumers drop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from eventsourcing.application import Application
from eventsourcing.persistence import Notification
from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, bindparam, select

from .catalogue import Catalogue, IntegrationEvent, load_all
from .config import ServiceSettings
from .envelope import Envelope

log = logging.getLogger("ehr.relay")

#: Namespace of envelope ids: one id per (source, aggregate, version), stable on replay.
EVENT_ID_NAMESPACE = uuid.UUID("6f1c1d7e-3a55-4c1b-9a43-5a0c2b7e9d10")

Translator = Callable[[Any], IntegrationEvent | None]

_metadata = MetaData()
relay_positions = Table(
    "outbox_relay_positions",
    _metadata,
    Column("relay", String(100), primary_key=True),
    Column("position", BigInteger, nullable=False),
)


def topic_for(context: str) -> str:
    """The Kafka topic of a bounded context."""
    return f"ehr.{context}.events"


def event_id(source: str, originator_id: Any, originator_version: int) -> str:
    """Envelope id of an event: deterministic, so a republished event keeps its id."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{source}/{originator_id}/{originator_version}"))


def envelope_of(
    app: Application,
    translate: Translator,
    source: str,
    notification: Notification,
    catalogue: Catalogue,
) -> Envelope | None:
    """The envelope a relay publishes for ``notification``, or None if it stays private.

    Refuses (with :class:`~ehr_events.catalogue.CatalogueError`) what the catalogue
    does not know or what does not validate against its schema.
    """
    domain_event = app.mapper.to_domain_event(notification)
    integration = translate(domain_event)
    if integration is None:
        return None
    data = integration.model_dump(mode="json")
    if type(integration) is not catalogue.schema(integration.event_type):
        # an instance of the catalogue's own schema validated when it was built
        # (frozen, so it cannot have changed since); anything else is checked here
        catalogue.validate(integration.event_type, data)
    actor = getattr(domain_event, "actor", None) or {}
    patient_id = data.get("patient_id")
    return Envelope(
        id=event_id(source, notification.originator_id, notification.originator_version),
        source=source,
        type=integration.event_type,
        subject=str(notification.originator_id),
        time=getattr(domain_event, "timestamp"),  # noqa: B009 - not in the protocol
        aggregateversion=notification.originator_version,
        patientid=str(patient_id) if patient_id else None,
        actor=actor.get("sub"),
        actorrole=actor.get("role"),
        organization=actor.get("org"),
        traceparent=getattr(domain_event, "traceparent", None),
        sequence=notification.id,
        data=data,
    )


def published_envelopes(
    app: Application, translate: Translator, source: str, catalogue: Catalogue | None = None
) -> list[Envelope]:
    """Every envelope a relay would publish from ``app``'s whole notification log."""
    catalogue = catalogue or load_all()
    envelopes: list[Envelope] = []
    position = 0
    while True:
        batch = app.recorder.select_notifications(
            start=position, limit=500, inclusive_of_start=False
        )
        if not batch:
            return envelopes
        for notification in batch:
            envelope = envelope_of(app, translate, source, notification, catalogue)
            if envelope is not None:
                envelopes.append(envelope)
        position = batch[-1].id


class PositionStore:
    """The relay's position, kept in the service's own database."""

    def __init__(self, engine: Engine, relay: str) -> None:
        self.engine = engine
        self.relay = relay
        _metadata.create_all(engine)
        # built once: building the statement costs more than running it
        self._update = (
            relay_positions.update()
            .where(relay_positions.c.relay == bindparam("relay_name"))
            .values(position=bindparam("new_position"))
        )

    def get(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(relay_positions.c.position).where(relay_positions.c.relay == self.relay)
            ).scalar_one_or_none()
        return int(value or 0)

    def set(self, position: int) -> None:
        with self.engine.begin() as conn:
            updated = conn.execute(
                self._update, {"relay_name": self.relay, "new_position": position}
            ).rowcount
            if not updated:
                conn.execute(relay_positions.insert().values(relay=self.relay, position=position))


async def existing_topics(bootstrap: str) -> set[str]:
    """Names of the topics the broker has."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def ensure_topics(bootstrap: str, topics: list[str], partitions: int = 3) -> list[str]:
    """Create the topics that do not exist yet; returns those it created.

    Only relays create topics (production declares them with the Kafka operator);
    consumers wait for them, so a relay can tell a broker that lost its log.
    """
    missing = [t for t in topics if t not in await existing_topics(bootstrap)]
    if not missing:
        return []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
        )
    except TopicAlreadyExistsError:
        return []
    finally:
        await admin.close()
    return missing


def make_producer(bootstrap: str) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas (``acks="all"``).

    No ``linger_ms``: the relay hands over a whole batch without yielding to the
    event loop, so it is one produce request anyway; lingering would only add a
    timer wake-up and its milliseconds to every batch.
    """
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=0,
        request_timeout_ms=15000,
    )


class OutboxRelay:
    """Relays one service's notification log to its topic.

    A batch has a fixed cost, about as much CPU as five to ten events (a select,
    a produce request and its acknowledgement, a position write, two trips to a
    thread), so :meth:`run` lets batches gather: a batch that did not fill
    ``batch_size`` means the relay has caught up, and it waits ``poll_interval``
    before it selects again (at 200 events a second, batches of about ten).
    Once nothing has come for ``idle_after`` seconds it polls every
    ``idle_poll_interval`` only: each wake-up costs CPU too, and an idle relay
    should cost next to nothing. An event then waits up to that long.
    """

    def __init__(
        self,
        app: Application,
        translate: Translator,
        *,
        source: str,
        positions: PositionStore,
        bootstrap: str,
        topic: str | None = None,
        batch_size: int = 500,
        poll_interval: float = 0.05,
        idle_poll_interval: float = 0.1,
        idle_after: float = 2.0,
        check_interval: float = 5.0,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.app = app
        self.translate = translate
        self.source = source
        self.topic = topic or topic_for(source)
        self.positions = positions
        self.bootstrap = bootstrap
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.idle_poll_interval = max(idle_poll_interval, poll_interval)
        self.idle_after = idle_after
        self.check_interval = check_interval
        self.catalogue = catalogue or load_all()
        self.position = positions.get()
        self._producer: AIOKafkaProducer | None = None
        self.published = 0

    def envelope_for(self, notification: Notification) -> Envelope | None:
        """The envelope of a notification, or None for events kept private."""
        return envelope_of(self.app, self.translate, self.source, notification, self.catalogue)

    def _select(self) -> list[Notification]:
        return list(
            self.app.recorder.select_notifications(
                start=self.position, limit=self.batch_size, inclusive_of_start=False
            )
        )

    async def check_broker_log(self) -> None:
        """Republish everything if the broker lost the topic we had published to.

        A topic that is missing while our position is past zero means the broker's
        log is gone (the memory-only development broker restarted, or a topic was
        recreated): the event store is the system of record, so start again from 0.
        Consumers drop what they already applied by event id.
        """
        created = await ensure_topics(self.bootstrap, [self.topic])
        if created and self.position > 0:
            log.warning(
                "relay %s: topic %s was missing; republishing from the start",
                self.source,
                self.topic,
            )
            self.position = 0
            await asyncio.to_thread(self.positions.set, 0)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            await self.check_broker_log()
            producer = make_producer(self.bootstrap)
            await producer.start()
            self._producer = producer
        return self._producer

    async def close(self) -> None:
        """Stop the producer (the relay can run again later, on any event loop)."""
        await self._drop_producer()

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):  # closing a broken client
                await producer.stop()

    async def run_once(self) -> int:
        """Relay one batch; returns how many notifications it moved past."""
        # connect first: finding the broker's log gone resets the position to 0,
        # and that must happen before the batch is selected
        producer = await self._ensure_producer()
        notifications = await asyncio.to_thread(self._select)
        if not notifications:
            return 0
        envelopes = [e for n in notifications if (e := self.envelope_for(n)) is not None]
        if envelopes:
            futures = []
            for envelope in envelopes:
                key, value, headers = envelope.to_kafka()
                futures.append(await producer.send(self.topic, value, key=key, headers=headers))
            await asyncio.gather(*futures)
        last = notifications[-1].id
        await asyncio.to_thread(self.positions.set, last)
        self.position = last
        self.published += len(envelopes)
        return len(notifications)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until ``stop`` is set, retrying with back-off when the broker is away."""
        stop = stop or asyncio.Event()
        stopped = asyncio.ensure_future(stop.wait())
        backoff = 0.5
        log.info("relay %s starts after position %d", self.source, self.position)
        loop = asyncio.get_running_loop()
        last_check = float("-inf")
        last_moved = loop.time()
        try:
            while not stop.is_set():
                try:
                    if loop.time() - last_check > self.check_interval:
                        await self.check_broker_log()
                        last_check = loop.time()
                    moved = await self.run_once()
                    backoff = 0.5
                except Exception as exc:  # noqa: BLE001 - broker or database away: retry
                    log.warning("relay %s: retrying after %s", self.source, type(exc).__name__)
                    await self._drop_producer()
                    await asyncio.wait({stopped}, timeout=backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if moved:
                    last_moved = loop.time()
                if moved >= self.batch_size:
                    continue  # more is waiting
                idle = loop.time() - last_moved > self.idle_after
                pause = self.idle_poll_interval if idle else self.poll_interval
                await asyncio.wait({stopped}, timeout=pause)
        finally:
            stopped.cancel()
            await self._drop_producer()


def run_relay(
    settings: ServiceSettings,
    source: str,
    open_app: Callable[[], Application],
    translate: Translator,
    *,
    batch_size: int = 500,
    poll_interval: float = 0.05,
) -> None:
    """``python -m <service> relay``: relay the service's store until SIGINT or SIGTERM.

    Logs go to ``<var>/log/<source>-relay.log``; the position lives in the
    service's own database.
    """
    from .db import make_engine
    from .logs import configure_logging
    from .process import collect_less_often, run_worker

    configure_logging(f"{source}-relay", settings.log_dir)
    app = open_app()
    relay = OutboxRelay(
        app,
        translate,
        source=source,
        positions=PositionStore(make_engine(settings, source), source),
        bootstrap=settings.kafka_bootstrap,
        batch_size=batch_size,
        poll_interval=poll_interval,
    )
    collect_less_often()
    try:
        run_worker(relay.run)
    finally:
        app.close()
