"""How many PostgreSQL connections a process may hold: the settings, applied to every pool."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ehr_events.config import ServiceSettings, eventsourcing_env
from ehr_events.db import make_engine
from ehr_events.pgstore import Factory
from ehr_events.testing import settings_for_test


def test_a_pool_needs_a_connection_and_no_negative_overflow(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="db_pool_size"):
        settings_for_test(ServiceSettings, tmp_path, db_pool_size=0)
    with pytest.raises(ValidationError, match="db_max_overflow"):
        settings_for_test(ServiceSettings, tmp_path, db_max_overflow=-1)


@pytest.mark.postgres
def test_the_event_store_and_the_service_tables_take_their_pool_sizes_from_the_settings(
    postgres_service_settings: ServiceSettings,
) -> None:
    settings = postgres_service_settings.model_copy(
        update={"db_pool_size": 2, "db_max_overflow": 1}
    )
    engine = make_engine(settings, "testing")
    try:
        assert (engine.pool.size(), engine.pool._max_overflow) == (2, 1)  # type: ignore[attr-defined]
    finally:
        engine.dispose()

    factory = Factory(eventsourcing_env(settings, "testing"))
    try:
        pool = factory.datastore.pool
        assert (pool.min_size, pool.max_size) == (2, 3)
    finally:
        factory.close()
