"""The service's read models: their projections, databases and runners, by name."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

from ehr_events.db import make_engine
from ehr_events.projection import Projection, ProjectionRunner
from ehr_events.web import run_blocking

from .audit import AuditProjection
from .chart import ChartProjection
from .config import SERVICE, ProjectionsSettings

log = logging.getLogger("projections")

#: The read models this service keeps.
NAMES = ("chart", "audit")

P = ParamSpec("P")
T = TypeVar("T")


def make_projection(settings: ProjectionsSettings, name: str) -> Projection:
    if name == "chart":
        return ChartProjection(mrn_system=settings.mrn_system)
    if name == "audit":
        return AuditProjection()
    raise ValueError(f"unknown projection {name!r}; choose from {', '.join(NAMES)}")


#: How much of a SQLite read model each connection maps into memory (address space,
#: not memory: the pages are the operating system's file cache, shared by all).
MMAP_BYTES = 1 << 30


def make_read_engine(
    settings: ProjectionsSettings, name: str, *, for_requests: bool = False
) -> Engine:
    """The database of a read model: ``var/projections/<name>.sqlite3`` or the schema.

    ``for_requests``: the API's engine, whose lock waits and statements are bounded
    on PostgreSQL (see :mod:`ehr_events.db`).
    """
    engine = make_engine(settings, SERVICE, name, for_requests=for_requests)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _map_into_memory)
    return engine


def _map_into_memory(dbapi_connection: Any, _record: Any) -> None:
    """Read the file through a memory map, not through SQLite's own page cache.

    A search looks up rows all over the chart. Once the file outgrows the page
    cache (2 MB per connection), each of those pages cost a ``read()`` into it; a
    mapped page is read in place: a third less CPU for a name search in a chart
    of 40 000 patients.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    cursor.close()


def make_runner(
    settings: ProjectionsSettings,
    name: str,
    *,
    engine: Engine | None = None,
    projection: Projection | None = None,
    indexes: bool = True,
) -> ProjectionRunner:
    """The runner of a read model, its tables (and, with ``indexes``, their indexes) created.

    Processes of the service start together and create the same tables: a loser of
    that race on PostgreSQL sees a duplicate error and simply tries again.
    """
    projection = projection or make_projection(settings, name)
    engine = engine or make_read_engine(settings, name)
    for attempt in range(5):
        try:
            return ProjectionRunner(
                projection, engine, bootstrap=settings.kafka_bootstrap, indexes=indexes
            )
        except (IntegrityError, ProgrammingError) as exc:
            if attempt == 4:
                raise
            log.info("%s: tables being created elsewhere (%s), retrying", name, type(exc).__name__)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def process_runner(
    settings: ProjectionsSettings, name: str, process: str, *, indexes: bool = True
) -> ProjectionRunner:
    """The runner of a long-lived process named ``process``: its log file set up,
    the garbage collector tuned once the runner is built.

    Picklable with :func:`functools.partial`: rebuild processes are spawned with it
    (``indexes=False``: the rebuild creates them at its end).
    """
    from ehr_events.logs import configure_logging
    from ehr_events.process import collect_less_often

    configure_logging(process, settings.log_dir)
    runner = make_runner(settings, name, indexes=indexes)
    collect_less_often()
    return runner


async def read(
    query: Callable[Concatenate[Engine, P], T], engine: Engine, *args: P.args, **kwargs: P.kwargs
) -> T:
    """``query(engine, ...)`` from a route: on SQLite in the event loop, else in a thread.

    A SQLite read model is a local file in WAL mode, where readers never wait for
    the writer: handing a read to a worker thread (waking it, handing the GIL over)
    cost several times the read itself. PostgreSQL is a network round trip that
    can hang while the server is away, so it stays off the event loop.
    """
    if engine.dialect.name == "sqlite":
        return query(engine, *args, **kwargs)
    return await run_blocking(query, engine, *args, **kwargs)


@dataclass
class ReadModels:
    """What the API reads: each read model's engine and runner (for its status)."""

    chart: ProjectionRunner
    audit: ProjectionRunner

    @classmethod
    def open(cls, settings: ProjectionsSettings) -> ReadModels:
        """The read models' tables and indexes made sure of (with no time limit: an index
        added by an upgrade may take a while), then engines bounded for requests."""
        runners = {}
        for name in NAMES:
            make_runner(settings, name).engine.dispose()
            runners[name] = make_runner(
                settings,
                name,
                engine=make_read_engine(settings, name, for_requests=True),
                indexes=False,
            )
        return cls(**runners)

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
