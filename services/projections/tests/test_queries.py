"""Chart searches and reads as the API runs them: FHIR parameter rules, paging, order."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import Engine, event

from ehr_events.projection import ProjectionRunner
from ehr_events.testing import settings_for_test
from projections.config import ProjectionsSettings
from projections.queries import (
    SearchError,
    get_resource_text,
    search_allergies,
    search_patients,
)
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

    @pytest.mark.parametrize(
        ("search", "expected"),
        [
            (dict(family=["mu"], given=["jo"]), ["p4"]),
            (dict(family=["mu"], birthdate=["1980"]), ["p1", "p4"]),
            (dict(family=["mu,smith"], birthdate=["ge1980-01-01"]), ["p1", "p3", "p4"]),
            (dict(given=["jo,hans"], identifier=["NAT-2,X-3"]), ["p2", "p3"]),
            (dict(family=["mu"], given=["a", "m"]), ["p1"]),
            (dict(family=["müll"], identifier=[f"{NATIONAL_ID_SYSTEM}|"]), ["p1"]),
            (
                dict(family=["mu"], given=["hans"], birthdate=["1975"], identifier=["MRN-0002"]),
                ["p2"],
            ),
            (dict(family=["mu"], identifier=["X-3"]), []),
            (dict(family=["mu", ""], given=[","]), ["p1", "p2", "p4"]),
        ],
    )
    def test_every_parameter_must_match_and_the_total_counts_each_patient_once(
        self, runner: ProjectionRunner, search: dict[str, list[str]], expected: list[str]
    ) -> None:
        result = search_patients(runner.engine, **search)  # type: ignore[arg-type]
        assert (result.total, ids(result)) == (len(expected), expected)

    def test_a_patient_with_several_matching_names_is_one_match(
        self, runner: ProjectionRunner
    ) -> None:
        # Anna Maria: both given names match, the patient counts once
        result = search_patients(runner.engine, given=["a,m"])
        assert (result.total, ids(result)) == (1, ["p1"])

    def test_pages_of_a_search_with_several_parameters(self, runner: ProjectionRunner) -> None:
        pages = [
            search_patients(
                runner.engine,
                family=["mu,smith"],
                birthdate=["ge1975-01-01"],
                count=2,
                offset=offset,
            )
            for offset in (0, 2, 4)
        ]
        assert [(p.total, ids(p)) for p in pages] == [
            (4, ["p1", "p2"]),
            (4, ["p3", "p4"]),
            (4, []),
        ]

    def test_allergies_are_found_by_patient(self, runner: ProjectionRunner) -> None:
        assert ids(search_allergies(runner.engine, patient=["Patient/p1"])) == ["a1", "a2"]
        assert search_allergies(runner.engine, patient=["p1,p3"]).total == 3
        assert search_allergies(runner.engine, patient=["p2"]).total == 0
        page = search_allergies(runner.engine, patient=["p1,p3"], count=1, offset=2)
        assert (page.total, ids(page)) == (3, ["a3"])
        both = search_allergies(runner.engine, patient=["p1,p3", "Patient/p3"])
        assert (both.total, ids(both)) == (1, ["a3"])
        every = search_allergies(runner.engine, count=2)
        assert (every.total, ids(every)) == (3, ["a1", "a2"])

    def test_a_search_page_is_the_stored_json_text(self, runner: ProjectionRunner) -> None:
        result = search_patients(runner.engine, family=["smith"])
        stored = get_resource_text(runner.engine, "Patient", "p3")
        assert stored is not None
        assert result.texts == [stored.json]


class TestQueriesOnSQLite(QueriesOnSQLite):
    @pytest.mark.parametrize(
        ("search", "names_index"),
        [
            (dict(family=["mu"]), "ix_chart_patient_names_family_partial"),
            (dict(given=["jo"]), "ix_chart_patient_names_given_partial"),
            (dict(birthdate=["ge1980"]), "ix_chart_patients_birth_date_patient"),
            (dict(family=["mu"], birthdate=["1980"]), "ix_chart_patient_names_family_partial"),
        ],
    )
    def test_a_search_reads_the_matching_ids_from_an_index_and_only_their_rows(
        self, runner: ProjectionRunner, search: dict[str, list[str]], names_index: str
    ) -> None:
        def run() -> object:
            return search_patients(runner.engine, **search)  # type: ignore[arg-type]

        plan = query_plan(runner.engine, run)
        assert f"USING COVERING INDEX {names_index}" in plan
        # each matching id finds its row by key: the order index is not walked
        assert "chart_resources USING INDEX sqlite_autoindex_chart_resources_1" in plan
        assert "ix_chart_resources_order" not in plan

    def test_an_allergy_search_reads_only_the_patients_allergies(
        self, runner: ProjectionRunner
    ) -> None:
        plan = query_plan(runner.engine, lambda: search_allergies(runner.engine, patient=["p1"]))
        assert "USING INDEX ix_chart_resources_patient" in plan
        assert "ix_chart_resources_order" not in plan


def query_plan(engine: Engine, search: Callable[[], object]) -> str:
    """SQLite's plans of the statements ``search`` runs, one line per step."""
    statements: list[tuple[str, Any]] = []

    def note(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", note)
    try:
        search()
    finally:
        event.remove(engine, "before_cursor_execute", note)
    with engine.connect() as conn:
        return "\n".join(
            str(row[3])
            for statement, parameters in statements
            for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        )


@pytest.mark.postgres
class TestQueriesOnPostgreSQL(QueriesOnSQLite):
    @pytest.fixture(scope="class")
    @classmethod
    def settings(
        cls, tmp_path_factory: pytest.TempPathFactory, postgres_url: str
    ) -> Iterator[ProjectionsSettings]:
        schema = f"projections_{uuid.uuid4().hex[:8]}"
        yield from settings_in_schema(tmp_path_factory.mktemp("queries"), postgres_url, schema)
