"""The service's read models: their projections, databases and runners, by name."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

from ehr_events.db import make_engine
from ehr_events.projection import Projection, ProjectionRunner

from .audit import AuditProjection
from .chart import ChartProjection
from .config import SERVICE, ProjectionsSettings

log = logging.getLogger("projections")

#: The read models this service keeps.
NAMES = ("chart", "audit")


def make_projection(settings: ProjectionsSettings, name: str) -> Projection:
    if name == "chart":
        return ChartProjection(mrn_system=settings.mrn_system)
    if name == "audit":
        return AuditProjection()
    raise ValueError(f"unknown projection {name!r}; choose from {', '.join(NAMES)}")


def make_read_engine(settings: ProjectionsSettings, name: str) -> Engine:
    """The database of a read model: ``var/projections/<name>.sqlite3`` or the schema."""
    return make_engine(settings, SERVICE, name)


def make_runner(
    settings: ProjectionsSettings,
    name: str,
    *,
    engine: Engine | None = None,
    projection: Projection | None = None,
) -> ProjectionRunner:
    """The runner of a read model, its tables created.

    Processes of the service start together and create the same tables: a loser of
    that race on PostgreSQL sees a duplicate error and simply tries again.
    """
    projection = projection or make_projection(settings, name)
    engine = engine or make_read_engine(settings, name)
    for attempt in range(5):
        try:
            return ProjectionRunner(projection, engine, bootstrap=settings.kafka_bootstrap)
        except (IntegrityError, ProgrammingError) as exc:
            if attempt == 4:
                raise
            log.info("%s: tables being created elsewhere (%s), retrying", name, type(exc).__name__)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass
class ReadModels:
    """What the API reads: each read model's engine and runner (for its status)."""

    chart: ProjectionRunner
    audit: ProjectionRunner

    @classmethod
    def open(cls, settings: ProjectionsSettings) -> ReadModels:
        return cls(chart=make_runner(settings, "chart"), audit=make_runner(settings, "audit"))

    @property
    def chart_engine(self) -> Engine:
        return self.chart.engine

    @property
    def audit_engine(self) -> Engine:
        return self.audit.engine

    def runners(self) -> dict[str, ProjectionRunner]:
        return {"chart": self.chart, "audit": self.audit}

    def ready(self) -> bool:
        """Both databases answer."""
        try:
            for runner in self.runners().values():
                with runner.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def close(self) -> None:
        for runner in self.runners().values():
            runner.engine.dispose()
