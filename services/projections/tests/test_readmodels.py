"""How routes reach the read models: SQLite in the event loop, PostgreSQL in a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from projections.config import ProjectionsSettings
from projections.readmodels import MMAP_BYTES, make_read_engine, read


def thread_of(_engine: Engine) -> int:
    return threading.get_ident()


def runs_in_the_event_loop(engine: Engine) -> bool:
    async def compare() -> bool:
        return await read(thread_of, engine) == threading.get_ident()

    return asyncio.run(compare())


@pytest.fixture
def sqlite_engine(sqlite_settings: ProjectionsSettings) -> Iterator[Engine]:
    engine = make_read_engine(sqlite_settings, "chart")
    yield engine
    engine.dispose()


def test_a_sqlite_read_runs_in_the_event_loop(sqlite_engine: Engine) -> None:
    assert runs_in_the_event_loop(sqlite_engine)


@pytest.mark.postgres
def test_a_postgresql_read_runs_in_a_worker_thread(
    postgres_settings: ProjectionsSettings,
) -> None:
    engine = make_read_engine(postgres_settings, "chart")
    try:
        assert not runs_in_the_event_loop(engine)
    finally:
        engine.dispose()


def test_a_sqlite_read_model_is_read_through_a_memory_map(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("PRAGMA mmap_size")).scalar_one() == MMAP_BYTES
