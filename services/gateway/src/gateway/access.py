"""Access decisions: every allow and every deny of the edge, as events.

Each decision is an :class:`AccessDecision` aggregate of one ``Decided`` event in
the gateway's own event store, whose notification log the outbox relay publishes
as ``ehr.gateway.AccessDecided.v1``. A decision names the route template, never
the raw URL: no query string (where searches carry PHI) is ever stored.

Requests do not wait for the store: :class:`DecisionLog` queues decisions and a
thread saves them in batches, retrying while the database is away. Nothing
about a failed save is logged but its error type and how many decisions wait.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from ehr_events.config import ServiceSettings, eventsourcing_env
from ehr_events.db import make_engine

log = logging.getLogger("gateway.access")

Outcome = Literal["allowed", "denied"]


@dataclass(frozen=True)
class Decision:
    """What the edge decided about one request."""

    method: str
    route: str
    action: str
    outcome: Outcome
    status: int
    user_id: str | None = None
    roles: tuple[str, ...] = ()
    organization_id: str | None = None
    patient_id: str | None = None
    reason: str | None = None
    client_address: str | None = None
    decision_id: uuid.UUID = field(default_factory=uuid.uuid4)
    decided_at: datetime = field(default_factory=lambda: datetime.now(UTC))


_DECISION_FIELDS = tuple(f.name for f in fields(Decision))


class AccessDecision(Aggregate):
    """One access decision; it is taken once and never changes."""

    class Decided(Aggregate.Created):
        method: str
        route: str
        action: str
        outcome: str
        status: int
        user_id: str | None
        roles: list[str]
        organization_id: str | None
        patient_id: str | None
        reason: str | None
        client_address: str | None
        decided_at: datetime

        @property
        def actor(self) -> dict[str, str]:
            """The caller, in the shape the outbox relay puts on the envelope."""
            actor: dict[str, str] = {}
            if self.user_id:
                actor["sub"] = self.user_id
            if self.roles:
                actor["role"] = ",".join(sorted(self.roles))
            if self.organization_id:
                actor["org"] = self.organization_id
            return actor

    @event(Decided)
    def __init__(
        self,
        id: uuid.UUID,  # the decision id, chosen by the edge
        method: str,
        route: str,
        action: str,
        outcome: str,
        status: int,
        user_id: str | None,
        roles: list[str],
        organization_id: str | None,
        patient_id: str | None,
        reason: str | None,
        client_address: str | None,
        decided_at: datetime,
    ) -> None:
        self.method = method
        self.route = route
        self.action = action
        self.outcome = outcome
        self.status = status
        self.user_id = user_id
        self.roles = roles
        self.organization_id = organization_id
        self.patient_id = patient_id
        self.reason = reason
        self.client_address = client_address
        self.decided_at = decided_at

    @classmethod
    def take(cls, decision: Decision) -> AccessDecision:
        # a shallow copy: every value of a decision is immutable (``asdict`` would
        # copy each of them recursively, on every request the gateway answers)
        fields: dict[str, Any] = {name: getattr(decision, name) for name in _DECISION_FIELDS}
        fields["id"] = fields.pop("decision_id")
        fields["roles"] = sorted(decision.roles)
        return cls(**fields)


class GatewayApplication(Application[uuid.UUID]):
    """The gateway's event store: access decisions."""

    name = "gateway"

    def record_decisions(self, decisions: list[Decision]) -> None:
        """Save decisions in one transaction."""
        if decisions:
            self.save(*(AccessDecision.take(d) for d in decisions))

    def get_decision(self, decision_id: uuid.UUID) -> AccessDecision:
        return self.repository.get(decision_id)


def open_gateway_application(settings: ServiceSettings) -> GatewayApplication:
    """The gateway's application on its own store (its PostgreSQL schema created first)."""
    if settings.uses_postgres():
        make_engine(settings, "gateway").dispose()
    return GatewayApplication(env=eventsourcing_env(settings, "gateway"))


class DecisionLog:
    """Saves decisions off the request path, in batches, in a thread of its own.

    The request path only appends to a deque (atomic under the GIL, no lock, no
    condition variable); the thread is woken once per batch, not once per request,
    and lingers ``linger_seconds`` so a batch gathers what arrives meanwhile: one
    transaction of the event store per batch instead of one per request.
    """

    def __init__(
        self,
        app: GatewayApplication,
        *,
        batch_size: int = 500,
        linger_seconds: float = 0.02,
        max_backoff: float = 5.0,
    ) -> None:
        self.app = app
        self.batch_size = batch_size
        self.linger_seconds = linger_seconds
        self.max_backoff = max_backoff
        self._queued: deque[Decision] = deque()
        self._in_flight = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.saved = 0

    def record(self, decision: Decision) -> None:
        """Queue a decision; it is saved shortly after."""
        self._queued.append(decision)
        if not self._wake.is_set():
            self._wake.set()

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def pending(self) -> int:
        """Decisions queued or being saved."""
        return len(self._queued) + self._in_flight

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued decision is saved; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Save what is queued (for up to ``timeout``), then end the thread."""
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, timeout))
        left = self.pending()
        if left:
            log.error("%d access decisions could not be saved before shutdown", left)

    def _take(self) -> list[Decision]:
        """Up to ``batch_size`` queued decisions, counted in flight until saved."""
        batch: list[Decision] = []
        while self._queued and len(batch) < self.batch_size:
            # counted before it leaves the deque, so ``pending`` never reads 0 early
            self._in_flight += 1
            batch.append(self._queued.popleft())
        return batch

    def _run(self) -> None:
        while not (self._stop.is_set() and not self._queued):
            if not self._queued:
                # cleared before looking again: a decision queued after this is
                # either seen by the check below or sets the event anew
                self._wake.clear()
                if not self._queued:
                    self._wake.wait(timeout=0.5)
                    if not self._stop.is_set():
                        self._stop.wait(self.linger_seconds)
                continue
            batch = self._take()
            try:
                self._save(batch)
            finally:
                self._in_flight -= len(batch)

    def _save(self, batch: list[Decision]) -> None:
        backoff = 0.1
        while True:
            try:
                self.app.record_decisions(batch)
            except Exception as exc:  # noqa: BLE001 - the store is away: keep and retry
                if self._stop.is_set():
                    log.error(
                        "%d access decisions lost at shutdown: %s", len(batch), type(exc).__name__
                    )
                    return
                log.warning(
                    "saving %d access decisions failed (%s); retrying",
                    len(batch),
                    type(exc).__name__,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.saved += len(batch)
            return
