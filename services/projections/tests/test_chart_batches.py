"""The chart applied a batch at a time gives exactly what it gives one event at a time.

The runner hands the chart every new event of a poll in one call; the chart
reads the rows they touch once, folds the events in memory and writes once.
Each story below is applied both ways, into two read models, and every row of
every chart table must come out the same.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from ehr_events.projection import ProjectionRunner
from ehr_events.testing import settings_for_test
from projections.chart import metadata
from projections.config import ProjectionsSettings
from projections.queries import get_resource
from projections.readmodels import make_runner

from .builders import (
    Item,
    allergy_recorded,
    allergy_refuted,
    demographics_updated,
    patient_registered,
    user_registered,
)
from .databases import settings_in_schema

PATIENT = "7c1e4a52-3d8b-4f0e-9a61-2b5d8c9e0f11"
OTHER = "9e2f5b63-4e9c-4a1f-8b72-3c6e9d0a1f22"
ALLERGY = "b2f9e3a5-8d2c-4c9f-9a7f-7c3e0d1b2a33"


def chart_rows(runner: ProjectionRunner) -> dict[str, list[str]]:
    """Every row of every chart table, sorted (the runner's own tables left out)."""
    with runner.engine.connect() as conn:
        return {
            table.name: sorted(repr(tuple(row)) for row in conn.execute(select(table)))
            for table in metadata.sorted_tables
        }


def one_by_one(runner: ProjectionRunner, items: Sequence[Item]) -> int:
    return sum(runner.apply_envelopes([item]) for item in items)


def patient_story(patient_id: str, mrn: str) -> list[Item]:
    """A registration and two updates of one patient, in order."""
    return [
        patient_registered(patient_id, mrn=mrn, list_mrn=False),
        demographics_updated(patient_id, version=2, mrn=None, family="Second"),
        demographics_updated(
            patient_id,
            version=3,
            mrn=None,
            family="Third",
            given=("Eva",),
            birth_date=date(1981, 3, 1),
        ),
    ]


class ChartBatchesOnSQLite:
    @pytest.fixture
    def settings_pair(self, tmp_path: Path) -> Iterator[tuple[ProjectionsSettings, ...]]:
        yield (
            settings_for_test(ProjectionsSettings, tmp_path / "batched"),
            settings_for_test(ProjectionsSettings, tmp_path / "single"),
        )

    @pytest.fixture
    def runners(
        self, settings_pair: tuple[ProjectionsSettings, ...]
    ) -> Iterator[tuple[ProjectionRunner, ProjectionRunner]]:
        batched, single = (make_runner(s, "chart") for s in settings_pair)
        yield batched, single
        batched.engine.dispose()
        single.engine.dispose()

    def assert_same_both_ways(
        self, runners: tuple[ProjectionRunner, ProjectionRunner], items: Sequence[Item]
    ) -> None:
        batched, single = runners
        assert batched.apply_envelopes(items) == one_by_one(single, items)
        assert chart_rows(batched) == chart_rows(single)
        assert batched.applied_count() == single.applied_count()

    def test_a_registration_and_two_updates_in_one_batch(
        self, runners: tuple[ProjectionRunner, ProjectionRunner]
    ) -> None:
        self.assert_same_both_ways(runners, patient_story(PATIENT, "MRN-0100"))
        stored = get_resource(runners[0].engine, "Patient", PATIENT)
        assert stored is not None and stored.version == 3
        assert stored.resource["name"][0]["family"] == "Third"
        # the update carried no MRN: the registration's stays first
        assert stored.resource["identifier"][0]["value"] == "MRN-0100"

    def test_updates_out_of_order_and_a_late_registration_in_one_batch(
        self, runners: tuple[ProjectionRunner, ProjectionRunner]
    ) -> None:
        registered, second, third = patient_story(PATIENT, "MRN-0101")
        # newest first: the older update changes nothing, the registration only adds its MRN
        self.assert_same_both_ways(runners, [third, second, registered])
        stored = get_resource(runners[0].engine, "Patient", PATIENT)
        assert stored is not None and stored.version == 3
        assert stored.resource["name"][0]["family"] == "Third"
        assert stored.resource["identifier"][0]["value"] == "MRN-0101"

    def test_a_replayed_batch_changes_nothing(
        self, runners: tuple[ProjectionRunner, ProjectionRunner]
    ) -> None:
        batched, single = runners
        items = patient_story(PATIENT, "MRN-0102") + [allergy_recorded(ALLERGY, PATIENT)]
        self.assert_same_both_ways(runners, items)
        before = chart_rows(batched)
        assert batched.apply_envelopes(items) == 0
        assert one_by_one(single, items) == 0
        assert chart_rows(batched) == before == chart_rows(single)

    def test_a_batch_holding_events_applied_in_an_earlier_batch(
        self, runners: tuple[ProjectionRunner, ProjectionRunner]
    ) -> None:
        registered, second, third = patient_story(PATIENT, "MRN-0103")
        self.assert_same_both_ways(runners, [registered, second])
        # the redelivered events are skipped, the new one applies on top of the stored rows
        self.assert_same_both_ways(runners, [registered, second, third])
        assert runners[0].applied_count() == 3

    def test_duplicates_within_one_batch_are_applied_once(
        self, runners: tuple[ProjectionRunner, ProjectionRunner]
    ) -> None:
        registered, second, third = patient_story(PATIENT, "MRN-0104")
        batched, _ = runners
        items = [registered, second, registered, third, second, third]
        self.assert_same_both_ways(runners, items)
        assert batched.applied_count() == 3

    def test_a_refutation_before_its_recording_in_one_batch(
        self, runners: tuple[ProjectionRunner, ProjectionRunner]
    ) -> None:
        items = [
            patient_registered(PATIENT, mrn="MRN-0105"),
            allergy_refuted(ALLERGY, PATIENT, version=2),
            allergy_recorded(ALLERGY, PATIENT, version=1),
        ]
        self.assert_same_both_ways(runners, items)
        stored = get_resource(runners[0].engine, "AllergyIntolerance", ALLERGY)
        assert stored is not None and stored.version == 2
        assert stored.resource["verificationStatus"]["coding"][0]["code"] == "refuted"
        assert stored.resource["code"]["text"] == "Penicillin"
        assert [n["text"] for n in stored.resource["note"]] == [
            "Reported by the patient.",
            "Tolerated.",
        ]

    def test_events_without_a_place_in_the_chart_are_counted_and_change_nothing(
        self, runners: tuple[ProjectionRunner, ProjectionRunner]
    ) -> None:
        items = [user_registered("user-1"), patient_registered(PATIENT, mrn="MRN-0106")]
        self.assert_same_both_ways(runners, items)
        assert runners[0].applied_count() == 2

    @pytest.mark.parametrize("seed", range(4))
    def test_a_shuffled_stream_in_random_batches(
        self, runners: tuple[ProjectionRunner, ProjectionRunner], seed: int
    ) -> None:
        rng = random.Random(seed)
        stream: list[Item] = []
        for i in range(12):
            patient = f"{i:08d}-0000-4000-8000-{seed:012d}"
            allergy = f"{i:08d}-0000-4000-9000-{seed:012d}"
            stream += patient_story(patient, f"MRN-{seed}-{i:03d}")
            stream += [
                allergy_recorded(allergy, patient, version=1),
                allergy_refuted(allergy, patient, version=2, reason=f"reason {i}"),
            ]
        # reordered across and within aggregates, some events delivered twice
        rng.shuffle(stream)
        stream += rng.sample(stream, 10)
        batched, single = runners
        expected = one_by_one(single, stream)
        applied, start = 0, 0
        while start < len(stream):
            size = rng.randint(1, 25)
            applied += batched.apply_envelopes(stream[start : start + size])
            start += size
        assert applied == expected == 12 * 5
        assert chart_rows(batched) == chart_rows(single)
        # and a rebuild-sized batch of all of it, into a fresh read model, agrees too
        batched.reset()
        assert batched.apply_envelopes(stream) == expected
        assert chart_rows(batched) == chart_rows(single)


class TestChartBatchesOnSQLite(ChartBatchesOnSQLite):
    pass


@pytest.mark.postgres
class TestChartBatchesOnPostgreSQL(ChartBatchesOnSQLite):
    @pytest.fixture
    def settings_pair(
        self, tmp_path: Path, postgres_url: str, fresh_schema_suffix: str
    ) -> Iterator[tuple[ProjectionsSettings, ...]]:
        batched = settings_in_schema(
            tmp_path / "batched", postgres_url, f"projections_{fresh_schema_suffix}_b"
        )
        single = settings_in_schema(
            tmp_path / "single", postgres_url, f"projections_{fresh_schema_suffix}_s"
        )
        yield next(batched), next(single)
        for schema in (batched, single):
            next(schema, None)  # drops the schema
