"""Test databases: a PostgreSQL schema of a test's own, dropped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text

from ehr_events.config import sqlalchemy_url
from ehr_events.testing import settings_for_test
from projections.config import SERVICE, ProjectionsSettings


def settings_in_schema(
    var_dir: Path, postgres_url: str, schema: str
) -> Iterator[ProjectionsSettings]:
    """Settings on ``schema`` (yielded), then the schema dropped with all it holds."""
    settings = settings_for_test(
        ProjectionsSettings, var_dir, database_url=postgres_url, db_schema=schema
    )
    yield settings
    engine = create_engine(sqlalchemy_url(settings, SERVICE))
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()
