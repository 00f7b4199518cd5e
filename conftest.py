"""Session fixtures shared by every test suite: the broker and PostgreSQL.

The broker is a real Kafka-protocol broker started on a free loopback port.
PostgreSQL is the real server; ``make test`` prepares it and exports
``EHR_TEST_DATABASE_URL``. Without that variable, PostgreSQL tests are skipped
locally but fail under CI (``CI=true``), so a missing set-up step cannot hide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ehr_events.config import ServiceSettings
from ehr_events.devinfra import start_broker
from ehr_events.testing import settings_for_test


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of a fresh broker for this test session."""
    process, port = start_broker()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the test database on the real PostgreSQL server."""
    url = os.environ.get("EHR_TEST_DATABASE_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("EHR_TEST_DATABASE_URL is not set: run the tests with `make test`")
        pytest.skip("EHR_TEST_DATABASE_URL is not set (run `make test`)")
    return url


@pytest.fixture
def fresh_schema_suffix() -> str:
    """A short unique suffix, so PostgreSQL tests do not see each other's tables."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def postgres_service_settings(
    tmp_path: Path, postgres_url: str, fresh_schema_suffix: str
) -> ServiceSettings:
    """Shared service settings on the test database, in a schema of this test's own."""
    return settings_for_test(
        ServiceSettings,
        tmp_path,
        database_url=postgres_url,
        db_schema=f"testing_{fresh_schema_suffix}",
    )
