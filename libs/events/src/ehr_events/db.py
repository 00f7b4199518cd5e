"""SQLAlchemy engines for a service's own tables (relay position, read models).

On SQLite: WAL mode and a busy timeout, so a writer process and reader processes
share a file. On PostgreSQL: the service's own schema, created if missing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, text

from .config import ServiceSettings, schema_for, sqlalchemy_url


def make_engine(settings: ServiceSettings, service: str, name: str = "events") -> Engine:
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
        pool_size=5,
        max_overflow=10,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )
    if schema:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        engine = engine.execution_options(schema_translate_map={None: schema})
    return engine
