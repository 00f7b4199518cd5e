"""SQLAlchemy engines for a service's own tables (relay position, read models).

On SQLite: WAL mode and a busy timeout, so a writer process and reader processes
share a file. On PostgreSQL: the service's own schema, created if missing; an
engine that answers requests (``for_requests``) waits at most
:data:`LOCK_TIMEOUT_MS` for a lock and runs no statement longer than
:data:`STATEMENT_TIMEOUT_MS`, so a table locked by another session (a rebuild's
``DROP TABLE``, a migration, ``VACUUM FULL``) turns a request into a 503 well
within the gateway's 10 s wait, instead of a hang. Engines of background work
(projectors, rebuilds, relays) have no such bound: a rebuild's ``DROP TABLE``
must wait for readers, its ``CREATE INDEX`` may take minutes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Dialect, Engine, Table, create_engine, event, text

from .config import ServiceSettings, schema_for, sqlalchemy_url

#: Longest wait for a lock, and longest statement, of a session serving requests
#: on PostgreSQL (read models here; the event stores in :mod:`ehr_events.pgstore`).
LOCK_TIMEOUT_MS = 3000
STATEMENT_TIMEOUT_MS = 4000
#: libpq's session options that set both.
REQUEST_OPTIONS = f"-c lock_timeout={LOCK_TIMEOUT_MS} -c statement_timeout={STATEMENT_TIMEOUT_MS}"


def make_engine(
    settings: ServiceSettings, service: str, name: str = "events", *, for_requests: bool = False
) -> Engine:
    """Engine for ``service``'s database ``name`` (see :func:`sqlalchemy_url`)."""
    url = sqlalchemy_url(settings, service, name)
    schema = schema_for(settings, service)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": 5,
            **({"options": REQUEST_OPTIONS} if for_requests else {}),
        },
    )
    if schema:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        engine = engine.execution_options(schema_translate_map={None: schema})
    return engine


def table_schema(conn: Connection, table: Table) -> str | None:
    """The schema ``table`` is in on ``conn`` (its ``schema_translate_map`` applied)."""
    schemas = conn.get_execution_options().get("schema_translate_map") or {}
    return schemas.get(table.schema, table.schema)


def qualified_name(dialect: Dialect, table: Table, schema: str | None) -> str:
    """``table``'s quoted name in ``schema``, for SQL that SQLAlchemy does not write."""
    quote = dialect.identifier_preparer.quote
    return quote(table.name) if schema is None else f"{quote(schema)}.{quote(table.name)}"
