"""Bulk writes past SQLAlchemy's per-row parameter processing.

``Connection.execute(statement, [dict, ...])`` builds, checks and converts one
parameter dict per row: several microseconds a row, more than SQLite takes to
store it. A read model that writes thousands of rows a batch (a rebuild writes
half a dozen per event) hands its rows to a :class:`BulkStatement` instead, as
tuples. The statement is compiled by SQLAlchemy once per database flavour
(dialect and schema), then:

* on SQLite (and any driver but psycopg) the rows go to the driver's
  ``executemany`` through ``exec_driver_sql``; a value is converted only where its
  column type has a bind processor (SQLite's dates and datetimes), by
  SQLAlchemy's own processor, so what is stored is exactly what Core stores;
* on PostgreSQL (psycopg) an INSERT is a ``COPY ... FROM STDIN`` in the same
  transaction: one statement for all the rows instead of one per row, which
  takes the server about half the work a row and the client a fifth.

Errors surface as SQLAlchemy's (an ``IntegrityError`` stays one), never with the
rows' values in their message: they may be PHI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import Insert, UpdateBase

from .db import qualified_name

Row = tuple[Any, ...]
Run = Callable[[Connection, Sequence[Row]], None]


class BulkStatement:
    """An INSERT, UPDATE or DELETE executed for many rows of positional values.

    ``names`` are the statement's parameters (an insert's column keys, an
    update's columns then its ``bindparam`` names) in the order each row, a
    tuple, lists its values.
    """

    def __init__(self, statement: UpdateBase, names: Sequence[str]) -> None:
        self.statement = statement
        self.names = tuple(names)
        self._prepared: dict[tuple[Any, ...], tuple[str, Run]] = {}

    def execute(self, conn: Connection, rows: Sequence[Row]) -> None:
        """Execute the statement once per row, in the connection's transaction."""
        if rows:
            self._prepare(conn)[1](conn, rows)

    def sql(self, conn: Connection) -> str:
        """The statement as the driver gets it on ``conn``."""
        return self._prepare(conn)[0]

    def _prepare(self, conn: Connection) -> tuple[str, Run]:
        dialect = conn.dialect
        schemas = conn.get_execution_options().get("schema_translate_map") or {}
        key = (dialect, tuple(sorted(schemas.items(), key=lambda kv: str(kv[0]))))
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = self._compile(dialect, schemas)
        return prepared

    def _compile(self, dialect: Dialect, schemas: dict[Any, Any]) -> tuple[str, Run]:
        compiled = self.statement.compile(
            dialect=dialect,
            column_keys=list(self.names),
            schema_translate_map=schemas or None,
            render_schema_translate=bool(schemas),
        )
        bound = set(compiled.binds)
        if bound != set(self.names):
            raise ValueError(
                f"statement parameters {sorted(bound)} are not the given {sorted(self.names)}"
            )
        processors: dict[int, Callable[[Any], Any]] = {}
        for i, name in enumerate(self.names):
            type_ = compiled.binds[name].type
            processor = type_.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[i] = processor
        if (
            isinstance(self.statement, Insert)
            and isinstance(self.statement.table, Table)
            and dialect.driver == "psycopg"
            and not processors
        ):
            return _copy(dialect, self.statement.table, self.names, schemas)
        if compiled.positiontup is not None:
            order = [self.names.index(name) for name in compiled.positiontup]
            return compiled.string, _executemany(compiled.string, _positional(order, processors))
        return compiled.string, _executemany(compiled.string, _named(self.names, processors))


def _executemany(sql: str, parameters: Callable[[Sequence[Row]], Any]) -> Run:
    def run(conn: Connection, rows: Sequence[Row]) -> None:
        conn.exec_driver_sql(sql, parameters(rows))

    return run


def _positional(
    order: list[int], processors: dict[int, Callable[[Any], Any]]
) -> Callable[[Sequence[Row]], list[Row]]:
    """Rows as the tuples a positional driver (SQLite's ``?``) takes."""
    in_order = order == list(range(len(order)))
    if in_order and not processors:
        return list
    if in_order and len(processors) == 1:
        ((i, process),) = processors.items()

        def one(rows: Sequence[Row]) -> list[Row]:
            return [(*row[:i], process(row[i]), *row[i + 1 :]) for row in rows]

        return one

    def convert(rows: Sequence[Row]) -> list[Row]:
        out = []
        for row in rows:
            values = list(row)
            for i, process in processors.items():
                values[i] = process(values[i])
            out.append(tuple(values[j] for j in order))
        return out

    return convert


def _named(
    names: tuple[str, ...], processors: dict[int, Callable[[Any], Any]]
) -> Callable[[Sequence[Row]], list[dict[str, Any]]]:
    """Rows as the dicts a driver with named parameters (``%(name)s``) takes."""

    def convert(rows: Sequence[Row]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            values = list(row)
            for i, process in processors.items():
                values[i] = process(values[i])
            out.append(dict(zip(names, values, strict=True)))
        return out

    return convert


def _copy(
    dialect: Dialect, table: Table, names: tuple[str, ...], schemas: dict[Any, Any]
) -> tuple[str, Run]:
    """An INSERT as psycopg's ``COPY ... FROM STDIN``, in the open transaction."""
    quote = dialect.identifier_preparer.quote
    name = qualified_name(dialect, table, schemas.get(table.schema, table.schema))
    columns = ", ".join(quote(table.c[key].name) for key in names)
    sql = f"COPY {name} ({columns}) FROM STDIN"
    dbapi_error = dialect.loaded_dbapi.Error

    def run(conn: Connection, rows: Sequence[Row]) -> None:
        driver = conn.connection.driver_connection
        assert driver is not None
        try:
            with driver.cursor() as cursor, cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        except dbapi_error as exc:
            # what Connection.execute would raise: IntegrityError for a duplicate key
            raise DBAPIError.instance(sql, None, exc, dbapi_error, dialect=dialect) from exc

    return sql, run
