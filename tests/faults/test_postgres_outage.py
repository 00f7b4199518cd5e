"""The whole platform on PostgreSQL, the production backend, while its database refuses connections.

The platform runs on a database of its own (``ehr_faults``, prepared by ``make
test``). The outage is what a failed-over or restarting server looks like to a
client: every open connection is dropped and new ones are refused. Meanwhile
every request, writes and reads (on PostgreSQL the chart lives in the same
database), gets 503 with a problem body within a bounded time: no hang, no 500.
When the database accepts connections again, the very next write succeeds
without restarting anything, the relays and projectors carry it to the chart,
and none of the refused writes happened.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from ehr_events.devplatform import Platform

from . import builders
from .fhirclient import login, search_patients, wait_until
from .outage import (
    answer_all,
    assert_unavailable,
    assert_writes_resume,
    create_patient,
    requests_while_away,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

DATABASE = "ehr_faults"
SCHEMAS = ("identity", "records", "gateway", "projections")


def _database_url(test_url: str, name: str) -> str:
    base, _, _ = test_url.rpartition("/")
    return f"{base}/{name}"


@dataclass(frozen=True)
class PgPlatform:
    platform: Platform
    #: the drill's database, and the test database its admin session connects to
    url: str
    admin_url: str


@pytest.fixture(scope="module")
def pg_platform(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgPlatform]:
    """Every process on a fresh copy of the drill's database (its schemas dropped first)."""
    url = _database_url(postgres_url, DATABASE)
    try:
        conn = psycopg.connect(url, connect_timeout=5, autocommit=True)
    except psycopg.OperationalError:
        pytest.fail(f"database {DATABASE} is missing: run the tests with `make test`")
    with conn:
        for schema in SCHEMAS:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    running = Platform(
        var_dir=Path(tmp_path_factory.mktemp("pg-outage")) / "var",
        extra_env={"EHR_DATABASE_URL": url},
    )
    try:
        running.start()
        yield PgPlatform(running, url, postgres_url)
    finally:
        running.kill()


@pytest.fixture(scope="module")
def platform(pg_platform: PgPlatform) -> Platform:
    """The drills' platform: after each drill, ``every_process_survives`` (conftest)
    fails it if any of these processes exited."""
    return pg_platform.platform


@dataclass(frozen=True)
class Session:
    """A physician signed in to the PostgreSQL platform, and an HTTP client of its gateway."""

    headers: dict[str, str]
    client: httpx.Client


@pytest.fixture
def session(pg_platform: PgPlatform) -> Iterator[Session]:
    headers = {"Authorization": f"Bearer {login(pg_platform.platform)}"}
    with httpx.Client(base_url=pg_platform.platform.gateway_url, timeout=30) as client:
        yield Session(headers, client)


@contextmanager
def database_refusing_connections(admin_url: str) -> Iterator[None]:
    """Drop every connection to the drill's database and refuse new ones, until the end."""
    with psycopg.connect(admin_url, connect_timeout=5, autocommit=True) as admin:
        name = sql.Identifier(DATABASE)
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(name))
        try:
            dropped = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (DATABASE,),
            ).fetchone()
            assert dropped is not None and dropped[0] > 0, "the platform held no connection"
            yield
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(name))


def stored_versions(database_url: str, aggregate_id: str) -> list[int]:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT originator_version FROM records.records_events WHERE originator_id = %s "
            "ORDER BY originator_version",
            (uuid.UUID(aggregate_id),),
        ).fetchall()
    return [int(version) for (version,) in rows]


def patient_in_chart(session: Session, family: str) -> dict:
    """A patient created through the gateway, once the chart's search finds it."""
    created = create_patient(session.client, session.headers, builders.patient(family, "Before"))
    wait_until(
        lambda: search_patients(session.client, session.headers, family),
        lambda found: len(found) == 1,
        timeout=30,
        what="the patient in the chart",
    )
    return created


def test_with_the_postgresql_database_away_every_request_gets_503_and_the_platform_recovers(
    pg_platform: PgPlatform, session: Session
) -> None:
    platform, physician, client = pg_platform.platform, session.headers, session.client
    family = builders.family_name("Pgaway")
    existing = patient_in_chart(session, family)

    calls = requests_while_away(platform, physician, existing, family)

    with database_refusing_connections(pg_platform.admin_url):
        answers = answer_all(calls)

    for name, (answer, seconds) in answers.items():
        assert_unavailable(name, answer, seconds, carried=(family, builders.mrn(family, 1)))

    # the database is back: identity, which had no request meanwhile (its pooled
    # connections all dead), signs in at once, and the very next write succeeds
    assert login(platform)
    assert_writes_resume(client, physician, family)
    assert stored_versions(pg_platform.url, existing["id"]) == [1]
    read = client.get(f"/fhir/Patient/{existing['id']}", headers=physician)
    assert read.status_code == 200 and read.json()["gender"] == existing["gender"]


def test_with_the_event_table_locked_by_another_session_requests_get_503_in_bounded_time(
    pg_platform: PgPlatform, session: Session
) -> None:
    platform, physician, client = pg_platform.platform, session.headers, session.client
    family = builders.family_name("Pglock")
    existing = create_patient(client, physician, builders.patient(family, "Before"))
    calls = requests_while_away(
        platform,
        physician,
        existing,
        family,
        kinds=(
            "read at the records API",
            "create through the gateway",
            "update through the gateway",
        ),
    )

    # what a migration's ALTER TABLE or a VACUUM FULL holds: no read, no write gets by
    with psycopg.connect(pg_platform.url, connect_timeout=5) as locker:
        locker.execute("LOCK TABLE records.records_events IN ACCESS EXCLUSIVE MODE")
        answers = answer_all(calls)
        locker.rollback()

    for name, (answer, seconds) in answers.items():
        assert_unavailable(name, answer, seconds, carried=(family,))

    # the lock is gone: writes succeed at once, and none of the refused ones happened
    assert_writes_resume(client, physician, family)
    assert stored_versions(pg_platform.url, existing["id"]) == [1]


def test_with_the_chart_locked_by_another_session_reads_get_503_in_bounded_time(
    pg_platform: PgPlatform, session: Session
) -> None:
    platform, physician, client = pg_platform.platform, session.headers, session.client
    family = builders.family_name("Pgchart")
    existing = patient_in_chart(session, family)
    calls = requests_while_away(
        platform,
        physician,
        existing,
        family,
        kinds=("read through the gateway", "search through the gateway"),
    )

    # what a rebuild's DROP TABLE or a migration holds on the chart's tables
    with psycopg.connect(pg_platform.url, connect_timeout=5) as locker:
        locker.execute(
            "LOCK TABLE projections.chart_resources, projections.chart_patients, "
            "projections.chart_patient_names, projections.chart_patient_identifiers "
            "IN ACCESS EXCLUSIVE MODE"
        )
        answers = answer_all(calls)
        locker.rollback()

    for name, (answer, seconds) in answers.items():
        assert_unavailable(name, answer, seconds, carried=(family,))

    # the lock is gone: the chart answers again, and the projector kept its place
    read = client.get(f"/fhir/Patient/{existing['id']}", headers=physician)
    assert read.status_code == 200 and read.json()["id"] == existing["id"]
    assert_writes_resume(client, physician, family)
