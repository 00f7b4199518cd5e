"""The chart's indexes on a database that an earlier version created."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, inspect

from ehr_events.config import schema_for
from projections.chart import metadata
from projections.config import SERVICE, ProjectionsSettings
from projections.queries import search_patients
from projections.readmodels import make_read_engine, make_runner

from .builders import patient_registered

PATIENT = "5d2f0c4e-8b1a-4e6f-9a3d-7c2b1e0f4a59"
#: The indexes this version adds in place of the retired ones.
ADDED = {
    "ix_chart_patient_names_family_partial",
    "ix_chart_patient_names_given_partial",
    "ix_chart_patients_birth_date_patient",
}
RETIRED = {index.name for index in metadata.info["retired_indexes"]}


def index_names(engine: Engine, settings: ProjectionsSettings) -> set[str]:
    inspector = inspect(engine)
    schema = schema_for(settings, SERVICE)
    return {
        str(index["name"])
        for table in metadata.sorted_tables
        for index in inspector.get_indexes(table.name, schema=schema)
    }


class IndexesOnSQLite:
    @pytest.fixture
    def settings(self, sqlite_settings: ProjectionsSettings) -> ProjectionsSettings:
        return sqlite_settings

    @pytest.fixture
    def earlier_chart(self, settings: ProjectionsSettings) -> Iterator[Engine]:
        """A chart with a patient, indexed as the earlier version left it."""
        runner = make_runner(settings, "chart")
        runner.apply_envelopes([patient_registered(PATIENT, family="Okafor")])
        for table in metadata.sorted_tables:
            for index in table.indexes:
                if index.name in ADDED:
                    index.drop(runner.engine)
        for index in metadata.info["retired_indexes"]:
            index.create(runner.engine)
        runner.engine.dispose()
        engine = make_read_engine(settings, "chart")
        yield engine
        engine.dispose()

    def test_the_earlier_chart_lacks_the_new_indexes(
        self, earlier_chart: Engine, settings: ProjectionsSettings
    ) -> None:
        names = index_names(earlier_chart, settings)
        assert names >= RETIRED
        assert not ADDED & names

    def test_setup_adds_the_missing_indexes_and_drops_the_retired_ones(
        self, earlier_chart: Engine, settings: ProjectionsSettings
    ) -> None:
        # the service starts on the chart, twice: the second setup changes nothing
        for _ in range(2):
            runner = make_runner(settings, "chart")
            runner.engine.dispose()

        names = index_names(earlier_chart, settings)
        assert names >= ADDED
        assert not RETIRED & names
        declared = {str(i.name) for table in metadata.sorted_tables for i in table.indexes}
        assert declared <= names
        # the rows are still there, and found through the new indexes
        found = search_patients(earlier_chart, family=["oka"])
        assert (found.total, [r["id"] for r in found.resources]) == (1, [PATIENT])


class TestIndexesOnSQLite(IndexesOnSQLite):
    pass


@pytest.mark.postgres
class TestIndexesOnPostgreSQL(IndexesOnSQLite):
    @pytest.fixture
    def settings(self, postgres_settings: ProjectionsSettings) -> ProjectionsSettings:
        return postgres_settings
