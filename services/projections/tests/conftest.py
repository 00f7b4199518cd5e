"""Fixtures of the projections tests: settings on SQLite or on a fresh PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ehr_events.testing import settings_for_test
from projections.config import ProjectionsSettings

from .databases import settings_in_schema


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> ProjectionsSettings:
    return settings_for_test(ProjectionsSettings, tmp_path)


@pytest.fixture
def postgres_settings(
    tmp_path: Path, postgres_url: str, fresh_schema_suffix: str
) -> Iterator[ProjectionsSettings]:
    """Settings whose tables live in a schema of their own, dropped afterwards."""
    yield from settings_in_schema(tmp_path, postgres_url, f"projections_{fresh_schema_suffix}")
