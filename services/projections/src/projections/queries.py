"""Reads of the read models, as the API serves them.

Search follows FHIR's rules for the parameters it supports: repeated parameters
(list items) must all match, comma-separated values within one are alternatives;
``\\,`` and ``\\|`` escape a literal comma or bar. Results come in a fixed order
(last updated, then id), with the total number of matches.

A search costs what it matches, not what the chart holds: each parameter is the
set of ids its search rows give (an index range), the sets are intersected, the
total is counted from that set, and the page is sorted from the rows of those
ids alone.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Engine,
    Select,
    and_,
    bindparam,
    func,
    intersect,
    not_,
    or_,
    select,
    true,
)

from .audit import audit_entries
from .chart import (
    StoredResource,
    chart_patient_identifiers,
    chart_patient_names,
    chart_patients,
    chart_resources,
    fold,
    to_stored,
    utc,
)


class SearchError(ValueError):
    """A search parameter is malformed. The message never repeats the value."""


@dataclass(frozen=True)
class SearchResult:
    total: int
    #: The page's resources as stored: JSON text, served without parsing it.
    texts: list[str]

    @property
    def resources(self) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.texts]


@dataclass(frozen=True)
class AuditPage:
    total: int
    entries: list[dict[str, Any]]


# -- reading one resource ------------------------------------------------------
_READ = select(chart_resources).where(
    chart_resources.c.resource_type == bindparam("resource_type"),
    chart_resources.c.id == bindparam("resource_id"),
)


def _read(engine: Engine, resource_type: str, resource_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            _READ, {"resource_type": resource_type, "resource_id": resource_id}
        ).first()


def get_resource(engine: Engine, resource_type: str, resource_id: str) -> StoredResource | None:
    """The current version of a resource, or None."""
    row = _read(engine, resource_type, resource_id)
    return to_stored(row) if row is not None else None


@dataclass(frozen=True)
class StoredText:
    """A resource's row as stored: its JSON text is served as it is, never re-encoded."""

    version: int
    last_updated: datetime
    json: str


def get_resource_text(engine: Engine, resource_type: str, resource_id: str) -> StoredText | None:
    """The current version of a resource with its JSON text, or None (the read path)."""
    row = _read(engine, resource_type, resource_id)
    if row is None:
        return None
    return StoredText(version=int(row.version_id), last_updated=row.last_updated, json=row.json)


# -- parameter syntax ----------------------------------------------------------
def split_values(parameter: str) -> list[str]:
    r"""Values of one parameter, split on unescaped commas (``\,`` is a literal comma).

    Other escapes stay in place for :func:`unescape` or the token split.
    """
    return [v for v in _split(parameter, ",") if v != ""]


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _split(text: str, separator: str, *, limit: int | None = None) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            following = text[i + 1]
            current.append(following if following == separator else char + following)
            i += 2
            continue
        if char == separator and (limit is None or len(parts) < limit):
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _token(value: str) -> tuple[str | None, str]:
    """``system|value``, ``|value``, ``system|`` or ``value``: (system or None, value).

    The system is None when there is no bar, ``""`` when the bar starts the token.
    """
    parts = _split(value, "|", limit=1)
    if len(parts) == 1:
        return None, unescape(parts[0])
    return unescape(parts[0]), unescape(parts[1])


_DATE = re.compile(r"^(?P<prefix>eq|ne|lt|gt|le|ge)?(?P<date>\d{4}(?:-\d{2}(?:-\d{2})?)?)$")


def _date_range(text: str) -> tuple[date, date]:
    """First and last day covered by a date of year, month or day precision."""
    parts = [int(p) for p in text.split("-")]
    if len(parts) == 1:
        return date(parts[0], 1, 1), date(parts[0], 12, 31)
    if len(parts) == 2:
        last = calendar.monthrange(parts[0], parts[1])[1]
        return date(parts[0], parts[1], 1), date(parts[0], parts[1], last)
    day = date(parts[0], parts[1], parts[2])
    return day, day


def _birthdate_test(value: str) -> Test:
    match = _DATE.match(value.strip())
    if match is None:
        raise SearchError("birthdate must be [eq|ne|lt|gt|le|ge]YYYY[-MM[-DD]]")
    try:
        low, high = _date_range(match["date"])
    except ValueError:
        raise SearchError("birthdate is not a calendar date") from None
    prefix = match["prefix"] or "eq"
    if prefix in ("eq", "ne"):
        return prefix, (low, high)
    return prefix, (low,) if prefix in ("lt", "ge") else (high,)


# -- search shapes -------------------------------------------------------------
# A search is parsed into its shape and its values. The shape names, for each
# parameter, the test of each alternative and how many values it binds; the
# statements depend on the shape only, so each shape's statements are built once
# and run again with new values bound (building and keying a SQLAlchemy statement
# cost more than running it).

#: One alternative of a parameter: its test and the values it binds.
Test = tuple[str, tuple[Any, ...]]
#: Per parameter: its kind and, per alternative, the test and its number of values.
Shape = tuple[tuple[str, tuple[tuple[str, int], ...]], ...]


def _name_tests(parameter: str) -> list[Test]:
    tests: list[Test] = []
    for value in split_values(parameter):
        prefix = fold(unescape(value))
        if prefix:
            tests.append(("starts", (prefix, prefix + TOP, _like_escape(prefix) + "%")))
    return tests


def _identifier_tests(parameter: str) -> list[Test]:
    tests: list[Test] = []
    for value in split_values(parameter):
        system, code = _token(value)
        if system is None:
            tests.append(("value", (code,)))
        elif system and code:
            tests.append(("system_value", (system, code)))
        elif system:
            tests.append(("system", (system,)))
        elif code:
            tests.append(("no_system_value", (code,)))
    return tests


def _birthdate_tests(parameter: str) -> list[Test]:
    return [_birthdate_test(v) for v in split_values(parameter)]


def _parsed(parameters: list[tuple[str, list[Test]]]) -> tuple[Shape, dict[str, Any]]:
    """The shape of the parameters that have a value, and the values by bound name."""
    shape: list[tuple[str, tuple[tuple[str, int], ...]]] = []
    values: dict[str, Any] = {}
    for kind, tests in parameters:
        if not tests:
            continue  # a parameter without a value does not narrow the search
        i = len(shape)
        shape.append((kind, tuple((test, len(bound)) for test, bound in tests)))
        for j, (_, bound) in enumerate(tests):
            values.update({_bound_name(i, j, k): v for k, v in enumerate(bound)})
    return tuple(shape), values


def _bound_name(parameter: int, alternative: int, value: int) -> str:
    return f"v{parameter}_{alternative}_{value}"


def _like_escape(text: str) -> str:
    """``text`` taken literally by ``LIKE ... ESCAPE '/'``."""
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


# -- conditions of a shape -----------------------------------------------------
#: Above every character a folded name can hold: ``v <= name < v + TOP`` is the
#: range of the names that start with ``v``, in code-point (byte) order.
TOP = "\U0010ffff"


def _starts_with(column: Any, low: Any, high: Any, pattern: Any) -> ColumnElement[bool]:
    """``column`` starts with a prefix: ``low`` is the prefix, ``high`` the prefix
    followed by :data:`TOP`, ``pattern`` the escaped prefix followed by ``%``.

    ``LIKE 'x%'`` alone cannot use the index on SQLite (its LIKE ignores case, the
    index does not), so every search read all name rows; the range narrows to the
    matching rows, and the LIKE keeps the match exact. The name columns compare in
    code-point order (BINARY on SQLite, collation "C" on PostgreSQL), which is what
    makes the range right.
    """
    return and_(column >= low, column < high, column.like(pattern, escape="/"))


def _identifier_condition(test: str, bound: list[Any]) -> ColumnElement[bool]:
    table = chart_patient_identifiers.c
    if test == "value":
        return table.value == bound[0]
    if test == "system_value":
        return and_(table.system == bound[0], table.value == bound[1])
    if test == "system":
        return table.system == bound[0]
    no_system = or_(table.system.is_(None), table.system == "")
    return and_(no_system, table.value == bound[0])


def _birthdate_condition(test: str, bound: list[Any]) -> ColumnElement[bool]:
    column = chart_patients.c.birth_date
    if test in ("eq", "ne"):
        within = and_(column >= bound[0], column <= bound[1])
        return within if test == "eq" else not_(within)
    comparisons = {"lt": column < bound[0], "gt": column > bound[0]}
    comparisons.update(le=column <= bound[0], ge=column >= bound[0])
    return comparisons[test]


def _condition(kind: str, test: str, bound: list[Any]) -> ColumnElement[bool]:
    if kind == "family":
        return _starts_with(chart_patient_names.c.family_norm, *bound)
    if kind == "given":
        return _starts_with(chart_patient_names.c.given_norm, *bound)
    if kind == "identifier":
        return _identifier_condition(test, bound)
    return _birthdate_condition(test, bound)


#: The table each kind of parameter searches, and its patient column.
_ROWS = {
    "family": chart_patient_names.c.patient_id,
    "given": chart_patient_names.c.patient_id,
    "identifier": chart_patient_identifiers.c.patient_id,
    "birthdate": chart_patients.c.patient_id,
}

#: The ids a search matches, as the column ``id``.
Matching = Select[str] | CompoundSelect[str]


def _matching(i: int, kind: str, tests: tuple[tuple[str, int], ...]) -> Select[str]:
    """The ids one parameter matches (a patient with several matching rows repeats)."""
    alternatives = [
        _condition(kind, test, [bindparam(_bound_name(i, j, k)) for k in range(arity)])
        for j, (test, arity) in enumerate(tests)
    ]
    return select(_ROWS[kind].label("id")).where(or_(*alternatives))


def _in_every(sets: list[Select[str]]) -> Matching | None:
    """The ids in every set, each once; None when no parameter was given.

    ``INTERSECT`` reads each set from its own index range once. Narrowing the first
    set with ``id IN (<the others>)`` instead lets SQLite drive the search through
    one of the other sets, looking up each of its ids in the first set's table:
    three to four times the work.
    """
    if not sets:
        return None
    if len(sets) == 1:
        return sets[0].distinct()
    return intersect(*sets)


# -- searches ------------------------------------------------------------------
def search_patients(
    engine: Engine,
    *,
    family: Sequence[str] = (),
    given: Sequence[str] = (),
    birthdate: Sequence[str] = (),
    identifier: Sequence[str] = (),
    count: int = 20,
    offset: int = 0,
) -> SearchResult:
    """Patients matching every parameter; names match case- and accent-insensitively
    from their start, ``birthdate`` takes a comparison prefix, ``identifier`` is a token.
    """
    shape, values = _parsed(
        [
            *(("family", _name_tests(p)) for p in family),
            *(("given", _name_tests(p)) for p in given),
            *(("birthdate", _birthdate_tests(p)) for p in birthdate),
            *(("identifier", _identifier_tests(p)) for p in identifier),
        ]
    )
    return _run(engine, _patient_statements(shape), values, count, offset)


def search_allergies(
    engine: Engine, *, patient: Sequence[str] = (), count: int = 20, offset: int = 0
) -> SearchResult:
    """Allergies of the given patients (``Patient/<id>`` or ``<id>``)."""
    values: dict[str, Any] = {}
    for parameter in patient:
        ids = [unescape(v).removeprefix("Patient/") for v in split_values(parameter)]
        if ids:
            values[f"patients_{len(values)}"] = ids
    return _run(engine, _allergy_statements(len(values)), values, count, offset)


@lru_cache(maxsize=256)
def _patient_statements(shape: Shape) -> Statements:
    sets = [_matching(i, kind, tests) for i, (kind, tests) in enumerate(shape)]
    return _statements("Patient", _in_every(sets))


@lru_cache(maxsize=16)
def _allergy_statements(parameters: int) -> Statements:
    if not parameters:
        return _statements("AllergyIntolerance", None)
    table = chart_resources.c
    of_any = [
        table.patient_id.in_(bindparam(f"patients_{i}", expanding=True)) for i in range(parameters)
    ]
    matching = select(table.id).where(table.resource_type == "AllergyIntolerance", *of_any)
    return _statements("AllergyIntolerance", matching)


#: A search's statements: its page (bound ``count`` and ``offset``) with the total
#: on every row, and the total alone (for a page without rows).
Statements = tuple[Select[str, int], Select[int]]


def _statements(resource_type: str, matching: Matching | None) -> Statements:
    """The page of ``matching`` in (last updated, id) order, and its total.

    Without parameters the order index gives the page. With them, the total is
    counted from the matching ids and the page is sorted from their rows alone: an
    outer join from the ids to their rows, because SQLite never reorders an outer
    join. Given an inner join, or ``id IN (...)``, it walks the whole order index
    instead and tests every resource of the type against the ids (its estimates
    take the walk to stop early; for a rare name it reads the whole chart). Every
    id has its row (search rows and resources change in one transaction); a row
    missing all the same is left out, not served as ``null``.

    The page carries the total, so one statement (one snapshot) answers a search.
    """
    table = chart_resources.c
    of_type = table.resource_type == resource_type
    counted: Select[int]
    if matching is None:
        counted = select(func.count()).select_from(chart_resources).where(of_type)
        rows = select(table.json, counted.scalar_subquery()).where(of_type)
    else:
        ids = matching.cte("matching")
        counted = select(func.count()).select_from(ids)
        rows = select(table.json, counted.scalar_subquery()).select_from(
            ids.outerjoin(chart_resources, and_(of_type, table.id == ids.c.id))
        )
    page = rows.order_by(table.last_updated, table.id)
    return page.limit(bindparam("count")).offset(bindparam("offset")), counted


def _run(
    engine: Engine, statements: Statements, values: dict[str, Any], count: int, offset: int
) -> SearchResult:
    page, counted = statements
    with engine.connect() as conn:
        rows = conn.execute(page, {**values, "count": count, "offset": offset}).all()
        # no row: nothing matched, the page is past the end, or no page was asked for
        total = rows[0][1] if rows else conn.execute(counted, values).scalar_one()
    return SearchResult(total=int(total), texts=[text for text, _ in rows if text is not None])


# -- audit ---------------------------------------------------------------------
def audit(
    engine: Engine,
    *,
    patient_id: str | None = None,
    user_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> AuditPage:
    """Audit entries, oldest first; ``since`` inclusive, ``until`` exclusive."""
    table = audit_entries.c
    conditions: list[ColumnElement[bool]] = []
    if patient_id is not None:
        conditions.append(table.patient_id == patient_id)
    if user_id is not None:
        conditions.append(table.user_id == user_id)
    if since is not None:
        conditions.append(table.occurred_at >= utc(since))
    if until is not None:
        conditions.append(table.occurred_at < utc(until))
    where = and_(true(), *conditions)
    with engine.connect() as conn:
        total = conn.execute(
            select(func.count()).select_from(audit_entries).where(where)
        ).scalar_one()
        rows = conn.execute(
            select(audit_entries)
            .where(where)
            .order_by(table.occurred_at, table.event_id)
            .limit(limit)
            .offset(offset)
        ).all()
    return AuditPage(total=int(total), entries=[_audit_entry(r) for r in rows])


def _audit_entry(row: Any) -> dict[str, Any]:
    entry = dict(row._mapping)
    entry["occurred_at"] = utc(entry["occurred_at"]).isoformat()
    entry["roles"] = entry["roles"].split(",") if entry["roles"] else []
    entry["detail"] = json.loads(entry["detail"])
    return entry
