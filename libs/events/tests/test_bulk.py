"""Bulk statements store exactly what SQLAlchemy Core stores, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from ehr_events.bulk import BulkStatement
from ehr_events.config import ServiceSettings
from ehr_events.db import make_engine
from ehr_events.testing import settings_for_test

metadata = MetaData()


def rows_table(name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("kind", String(40), primary_key=True),
        Column("id", String(64), primary_key=True),
        Column("version", Integer, nullable=False),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("born", Date, nullable=True),
        Column("note", Text, nullable=True),
    )


by_core = rows_table("written_by_core")
by_bulk = rows_table("written_by_bulk")
NAMES = ("kind", "id", "version", "at", "born", "note")

insert = BulkStatement(by_bulk.insert(), NAMES)
update = BulkStatement(
    by_bulk.update().where(
        by_bulk.c.kind == bindparam("b_kind"), by_bulk.c.id == bindparam("b_id")
    ),
    ("version", "at", "b_kind", "b_id"),
)
delete = BulkStatement(by_bulk.delete().where(by_bulk.c.id == bindparam("b_id")), ("b_id",))

#: Moments as the chart stores them (UTC), and the odd ones: no microseconds, another
#: zone, the first years of the calendar.
MOMENTS = [
    datetime(2024, 5, 1, 9, 0, tzinfo=UTC),
    datetime(2024, 5, 1, 9, 0, 0, 1, tzinfo=UTC),
    datetime(2024, 5, 1, 9, 0, 59, 999999, tzinfo=UTC),
    datetime(2023, 12, 31, 23, 59, 59, 500000, tzinfo=timezone(timedelta(hours=2))),
    datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
]


def sample_rows() -> list[tuple[Any, ...]]:
    return [
        ("Patient", f"id-{i}", i + 1, moment, date(1900 + i, 2, 28) if i % 2 else None, note)
        for i, (moment, note) in enumerate(
            zip(MOMENTS, ["plain", "", None, "ünïcødé ✓", '{"json": [1, 2]}'], strict=True)
        )
    ]


class BulkStatementsOnSQLite:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> ServiceSettings:
        return settings_for_test(ServiceSettings, tmp_path)

    @pytest.fixture
    def engine(self, settings: ServiceSettings) -> Iterator[Engine]:
        engine = make_engine(settings, "testing", "bulk")
        metadata.create_all(engine)
        yield engine
        engine.dispose()

    @staticmethod
    def stored(engine: Engine, table: Table) -> list[tuple[Any, ...]]:
        """Rows as SQLAlchemy reads them, and as the database itself holds them."""
        with engine.connect() as conn:
            typed = conn.execute(select(table).order_by(table.c.at, table.c.id)).all()
            raw = conn.execute(
                select(*(text(f"CAST({c.name} AS TEXT)") for c in table.columns)).select_from(table)
            ).all()
        return [*map(tuple, typed), *sorted(map(tuple, raw), key=repr)]

    def test_inserted_rows_read_back_as_core_writes_them(self, engine: Engine) -> None:
        rows = sample_rows()
        with engine.begin() as conn:
            conn.execute(by_core.insert(), [dict(zip(NAMES, row, strict=True)) for row in rows])
            insert.execute(conn, rows)
        assert self.stored(engine, by_bulk) == self.stored(engine, by_core)
        # and the datetimes order as the moments do
        with engine.connect() as conn:
            ids = conn.execute(select(by_bulk.c.id).order_by(by_bulk.c.at)).scalars().all()
        assert ids == [row[1] for row in sorted(rows, key=lambda row: row[3])]

    def test_updates_and_deletes_match_core(self, engine: Engine) -> None:
        rows = sample_rows()
        later = datetime(2025, 1, 1, 12, 30, 15, 250, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(by_core.insert(), [dict(zip(NAMES, row, strict=True)) for row in rows])
            insert.execute(conn, rows)
            conn.execute(
                by_core.update()
                .where(by_core.c.kind == bindparam("b_kind"), by_core.c.id == bindparam("b_id"))
                .values(version=bindparam("version"), at=bindparam("at")),
                [{"version": 9, "at": later, "b_kind": "Patient", "b_id": "id-1"}],
            )
            update.execute(conn, [(9, later, "Patient", "id-1")])
            conn.execute(by_core.delete().where(by_core.c.id.in_(["id-0", "id-3"])))
            delete.execute(conn, [("id-0",), ("id-3",)])
        assert self.stored(engine, by_bulk) == self.stored(engine, by_core)

    def test_a_duplicate_key_is_sqlalchemys_integrity_error(self, engine: Engine) -> None:
        rows = sample_rows()
        with pytest.raises(IntegrityError), engine.begin() as conn:
            insert.execute(conn, [*rows, rows[0]])
        # the transaction rolled back whole
        assert self.stored(engine, by_bulk) == []

    def test_no_rows_is_no_statement(self, engine: Engine) -> None:
        with engine.begin() as conn:
            insert.execute(conn, [])
        assert self.stored(engine, by_bulk) == []


def test_parameters_must_be_the_statements_own(tmp_path: Path) -> None:
    engine = make_engine(settings_for_test(ServiceSettings, tmp_path), "testing", "bulk")
    wrong = BulkStatement(by_bulk.insert(), ("kind", "id", "colour"))
    with engine.connect() as conn, pytest.raises(ValueError, match="statement parameters"):
        wrong.sql(conn)
    engine.dispose()


class TestBulkStatementsOnSQLite(BulkStatementsOnSQLite):
    pass


@pytest.mark.postgres
class TestBulkStatementsOnPostgreSQL(BulkStatementsOnSQLite):
    @pytest.fixture
    def settings(self, postgres_service_settings: ServiceSettings) -> ServiceSettings:
        return postgres_service_settings

    def test_an_insert_is_a_copy(self, engine: Engine) -> None:
        with engine.connect() as conn:
            assert insert.sql(conn).startswith("COPY ")
            assert update.sql(conn).startswith("UPDATE ")

    def test_rows_land_in_the_services_schema(
        self, engine: Engine, postgres_service_settings: ServiceSettings
    ) -> None:
        with engine.begin() as conn:
            insert.execute(conn, sample_rows())
        schema = postgres_service_settings.db_schema
        with engine.connect() as conn:
            count = conn.exec_driver_sql(f'SELECT count(*) FROM "{schema}".written_by_bulk')
            assert count.scalar_one() == len(MOMENTS)
