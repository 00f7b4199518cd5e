"""Reads of the read models, as the API serves them.

Search follows FHIR's rules for the parameters it supports: repeated parameters
(list items) must all match, comma-separated values within one are alternatives;
``\\,`` and ``\\|`` escape a literal comma or bar. Results come in a fixed order
(last updated, then id), with the total number of matches.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Select,
    and_,
    bindparam,
    false,
    func,
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
    resources: list[dict[str, Any]]


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


def _birthdate_condition(value: str) -> ColumnElement[bool]:
    match = _DATE.match(value.strip())
    if match is None:
        raise SearchError("birthdate must be [eq|ne|lt|gt|le|ge]YYYY[-MM[-DD]]")
    try:
        low, high = _date_range(match["date"])
    except ValueError:
        raise SearchError("birthdate is not a calendar date") from None
    column = chart_patients.c.birth_date
    prefix = match["prefix"] or "eq"
    conditions: dict[str, ColumnElement[bool]] = {
        "eq": and_(column >= low, column <= high),
        "ne": not_(and_(column >= low, column <= high)),
        "lt": column < low,
        "gt": column > high,
        "le": column <= high,
        "ge": column >= low,
    }
    return conditions[prefix]


def _any_of(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    return or_(*conditions) if conditions else false()


# -- patients ------------------------------------------------------------------
def _name_condition(column: Any, parameter: str) -> ColumnElement[bool] | None:
    values = [fold(unescape(v)) for v in split_values(parameter)]
    values = [v for v in values if v]
    if not values:
        return None
    matching = select(chart_patient_names.c.patient_id).where(
        _any_of([_starts_with(column, v) for v in values])
    )
    return chart_resources.c.id.in_(matching)


#: Above every character a folded name can hold: ``v <= name < v + TOP`` is the
#: range of the names that start with ``v``, in code-point (byte) order.
TOP = "\U0010ffff"


def _starts_with(column: Any, prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, as a range the column's index can serve.

    ``LIKE 'x%'`` alone cannot use the index on SQLite (its LIKE ignores case, the
    index does not), so every search read all name rows; the range narrows to the
    matching rows, and the LIKE keeps the match exact. The name columns compare in
    code-point order (BINARY on SQLite, collation "C" on PostgreSQL), which is what
    makes the range right.
    """
    return and_(column >= prefix, column < prefix + TOP, column.startswith(prefix, autoescape=True))


def _identifier_condition(parameter: str) -> ColumnElement[bool] | None:
    alternatives: list[ColumnElement[bool]] = []
    for value in split_values(parameter):
        system, code = _token(value)
        table = chart_patient_identifiers.c
        if system is None:
            alternatives.append(table.value == code)
        elif system and code:
            alternatives.append(and_(table.system == system, table.value == code))
        elif system:
            alternatives.append(table.system == system)
        elif code:
            no_system = or_(table.system.is_(None), table.system == "")
            alternatives.append(and_(no_system, table.value == code))
    if not alternatives:
        return None
    matching = select(chart_patient_identifiers.c.patient_id).where(_any_of(alternatives))
    return chart_resources.c.id.in_(matching)


def _birthdate_parameter(parameter: str) -> ColumnElement[bool] | None:
    values = split_values(parameter)
    if not values:
        return None
    matching = select(chart_patients.c.patient_id).where(
        _any_of([_birthdate_condition(v) for v in values])
    )
    return chart_resources.c.id.in_(matching)


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
    parameters: list[ColumnElement[bool] | None] = [
        *(_name_condition(chart_patient_names.c.family_norm, p) for p in family),
        *(_name_condition(chart_patient_names.c.given_norm, p) for p in given),
        *(_birthdate_parameter(p) for p in birthdate),
        *(_identifier_condition(p) for p in identifier),
    ]
    conditions = [chart_resources.c.resource_type == "Patient"]
    conditions += [c for c in parameters if c is not None]
    return _page(engine, conditions, count, offset)


def search_allergies(
    engine: Engine, *, patient: Sequence[str] = (), count: int = 20, offset: int = 0
) -> SearchResult:
    """Allergies of the given patients (``Patient/<id>`` or ``<id>``)."""
    conditions: list[ColumnElement[bool]] = [
        chart_resources.c.resource_type == "AllergyIntolerance"
    ]
    for parameter in patient:
        ids = [unescape(v).removeprefix("Patient/") for v in split_values(parameter)]
        if ids:
            conditions.append(chart_resources.c.patient_id.in_(ids))
    return _page(engine, conditions, count, offset)


def _page(
    engine: Engine, conditions: list[ColumnElement[bool]], count: int, offset: int
) -> SearchResult:
    where = and_(true(), *conditions)
    page: Select[Any] = (
        select(chart_resources.c.json)
        .where(where)
        .order_by(chart_resources.c.last_updated, chart_resources.c.id)
        .limit(count)
        .offset(offset)
    )
    with engine.connect() as conn:
        total = conn.execute(
            select(func.count()).select_from(chart_resources).where(where)
        ).scalar_one()
        resources = [json.loads(r) for r in conn.execute(page).scalars()] if count else []
    return SearchResult(total=int(total), resources=resources)


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
