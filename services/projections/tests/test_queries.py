"""Chart searches and reads as the API runs them: FHIR parameter rules, paging, order."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date

import pytest

from ehr_events.projection import ProjectionRunner
from ehr_events.testing import settings_for_test
from projections.config import ProjectionsSettings
from projections.queries import SearchError, search_allergies, search_patients
from projections.readmodels import make_runner

from .builders import (
    HOSPITAL_MRN_SYSTEM,
    NATIONAL_ID_SYSTEM,
    allergy_recorded,
    patient_registered,
)
from .databases import settings_in_schema

# four patients, registered in this order (so last_updated orders them p1..p4)
PATIENTS = {
    "p1": dict(family="Müller", given=("Anna", "Maria"), birth_date=date(1980, 2, 29)),
    "p2": dict(family="Mueller", given=("Hans",), birth_date=date(1975, 6, 15)),
    "p3": dict(family="Smith", given=("John",), birth_date=date(1990, 1, 1)),
    "p4": dict(family="Muñoz", given=("José",), birth_date=date(1980, 3, 1)),
}


def ids(result: object) -> list[str]:
    return [r["id"] for r in result.resources]  # type: ignore[attr-defined]


class QueriesOnSQLite:
    # the searches only read: one seeded chart serves the whole class
    @pytest.fixture(scope="class")
    @classmethod
    def settings(cls, tmp_path_factory: pytest.TempPathFactory) -> ProjectionsSettings:
        return settings_for_test(ProjectionsSettings, tmp_path_factory.mktemp("queries"))

    @pytest.fixture(scope="class")
    @classmethod
    def runner(cls, settings: ProjectionsSettings) -> Iterator[ProjectionRunner]:
        runner = make_runner(settings, "chart")
        items = []
        for n, (patient_id, demographics) in enumerate(PATIENTS.items(), start=1):
            identifiers = (
                [{"system": NATIONAL_ID_SYSTEM, "value": f"NAT-{n}"}]
                if n != 3
                else [{"system": "urn:other", "value": "X-3"}]
            )
            items.append(
                patient_registered(
                    patient_id,
                    mrn=f"MRN-000{n}",
                    identifiers=identifiers,
                    **demographics,  # type: ignore[arg-type]
                )
            )
        # same aggregate version 1 for each: order them in time explicitly
        items = [
            (envelope.model_copy(update={"time": envelope.time.replace(second=n)}), event)
            for n, (envelope, event) in enumerate(items)
        ]
        items += [
            allergy_recorded("a1", "p1"),
            allergy_recorded("a2", "p1", version=1, criticality="low"),
            allergy_recorded("a3", "p3"),
        ]
        runner.apply_envelopes(items)
        yield runner
        runner.engine.dispose()

    @pytest.mark.parametrize(
        ("family", "expected"),
        [
            (["mül"], ["p1"]),
            (["MÜLLER"], ["p1"]),
            (["muller"], ["p1"]),
            (["MU"], ["p1", "p2", "p4"]),
            (["smith,munoz"], ["p3", "p4"]),
            (["mu", "mue"], ["p2"]),
            (["ller"], []),
            (["%"], []),
            (["_"], []),
        ],
    )
    def test_family_matches_from_the_start_ignoring_case_and_accents(
        self, runner: ProjectionRunner, family: list[str], expected: list[str]
    ) -> None:
        assert ids(search_patients(runner.engine, family=family)) == expected

    def test_given_matches_any_given_name_and_combines_with_family(
        self, runner: ProjectionRunner
    ) -> None:
        assert ids(search_patients(runner.engine, given=["mar"])) == ["p1"]
        assert ids(search_patients(runner.engine, given=["jo"])) == ["p3", "p4"]
        assert ids(search_patients(runner.engine, family=["mu"], given=["jo"])) == ["p4"]

    @pytest.mark.parametrize(
        ("birthdate", "expected"),
        [
            (["1980-02-29"], ["p1"]),
            (["eq1980-02-29"], ["p1"]),
            (["ne1980-02-29"], ["p2", "p3", "p4"]),
            (["lt1980-01-01"], ["p2"]),
            (["le1975-06-15"], ["p2"]),
            (["gt1980-02-29"], ["p3", "p4"]),
            (["ge1980-02-29"], ["p1", "p3", "p4"]),
            (["ge1980-01-01", "le1985-12-31"], ["p1", "p4"]),
            (["1975-06-15,1990-01-01"], ["p2", "p3"]),
            (["1980"], ["p1", "p4"]),
            (["1980-02"], ["p1"]),
        ],
    )
    def test_birthdate_takes_comparison_prefixes(
        self, runner: ProjectionRunner, birthdate: list[str], expected: list[str]
    ) -> None:
        assert ids(search_patients(runner.engine, birthdate=birthdate)) == expected

    @pytest.mark.parametrize("birthdate", ["19800229", "sa1980-01-01", "1980-02-30", "x"])
    def test_malformed_birthdates_are_refused(
        self, runner: ProjectionRunner, birthdate: str
    ) -> None:
        with pytest.raises(SearchError) as caught:
            search_patients(runner.engine, birthdate=[birthdate])
        assert birthdate not in str(caught.value)

    @pytest.mark.parametrize(
        ("identifier", "expected"),
        [
            ([f"{HOSPITAL_MRN_SYSTEM}|MRN-0002"], ["p2"]),
            (["MRN-0002"], ["p2"]),
            (["urn:wrong|MRN-0002"], []),
            (["|MRN-0002"], []),
            ([f"{NATIONAL_ID_SYSTEM}|"], ["p1", "p2", "p4"]),
            (["NAT-1,X-3"], ["p1", "p3"]),
            ([f"{HOSPITAL_MRN_SYSTEM}|MRN-0001", "NAT-2"], []),
        ],
    )
    def test_identifier_is_a_token(
        self, runner: ProjectionRunner, identifier: list[str], expected: list[str]
    ) -> None:
        assert ids(search_patients(runner.engine, identifier=identifier)) == expected

    def test_pages_come_in_a_fixed_order_with_the_total(self, runner: ProjectionRunner) -> None:
        first = search_patients(runner.engine, count=2, offset=0)
        second = search_patients(runner.engine, count=2, offset=2)
        beyond = search_patients(runner.engine, count=2, offset=4)
        assert (first.total, ids(first)) == (4, ["p1", "p2"])
        assert (second.total, ids(second)) == (4, ["p3", "p4"])
        assert (beyond.total, ids(beyond)) == (4, [])
        only_total = search_patients(runner.engine, family=["mu"], count=0)
        assert (only_total.total, only_total.resources) == (3, [])

    def test_allergies_are_found_by_patient(self, runner: ProjectionRunner) -> None:
        assert ids(search_allergies(runner.engine, patient=["Patient/p1"])) == ["a1", "a2"]
        assert search_allergies(runner.engine, patient=["p1,p3"]).total == 3
        assert search_allergies(runner.engine, patient=["p2"]).total == 0
        page = search_allergies(runner.engine, patient=["p1,p3"], count=1, offset=2)
        assert (page.total, ids(page)) == (3, ["a3"])


class TestQueriesOnSQLite(QueriesOnSQLite):
    pass


@pytest.mark.postgres
class TestQueriesOnPostgreSQL(QueriesOnSQLite):
    @pytest.fixture(scope="class")
    @classmethod
    def settings(
        cls, tmp_path_factory: pytest.TempPathFactory, postgres_url: str
    ) -> Iterator[ProjectionsSettings]:
        schema = f"projections_{uuid.uuid4().hex[:8]}"
        yield from settings_in_schema(tmp_path_factory.mktemp("queries"), postgres_url, schema)
