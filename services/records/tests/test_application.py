"""The records application on the in-memory store, then on SQLite and PostgreSQL.

Each subclass only changes how an application is opened: every test runs on
every store. ``open_app()`` opens another application on the same store, as a
second process would (the in-memory store lives in one instance, so there it
is that instance again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import text

from ehr_events.db import make_engine
from ehr_events.testing import settings_for_test
from records.application import RecordsApplication, Saved
from records.config import RecordsSettings
from records.domain import (
    AllergyAlreadyRefuted,
    AllergyNotFound,
    DuplicatePatient,
    InvalidDemographics,
    Patient,
    PatientNotFound,
    VersionConflict,
)

from .builders import FAMILY, actor, allergy, demographics, renamed, unique_mrn

OpenApp = Callable[[], RecordsApplication]


class TestRecordsApplication:
    """On the in-memory store (eventsourcing's POPO recorders)."""

    @pytest.fixture
    def open_app(self, tmp_path: Path) -> Iterator[OpenApp]:
        app = RecordsApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
        yield lambda: app
        app.close()

    @pytest.fixture
    def app(self, open_app: OpenApp) -> RecordsApplication:
        return open_app()

    def test_a_registered_patient_can_be_read_back(
        self, app: RecordsApplication, open_app: OpenApp
    ) -> None:
        mrn = unique_mrn()
        saved = app.register_patient(mrn.lower(), demographics(), actor())

        assert (saved.version, saved.position) == (1, app.position())
        patient = open_app().get_patient(saved.id)
        assert patient.mrn == mrn
        assert patient.version == 1
        assert [n.family for n in patient.demographics.name] == [FAMILY]

    def test_a_second_registration_of_an_mrn_is_refused_and_leaves_one_patient(
        self, app: RecordsApplication, open_app: OpenApp
    ) -> None:
        mrn = unique_mrn()
        first = app.register_patient(mrn, demographics(), actor())
        position = app.position()

        # the same MRN, written differently, by another instance, with another name
        with pytest.raises(DuplicatePatient) as refused:
            open_app().register_patient(f" {mrn.lower()} ", renamed("Impostor"), actor())

        assert mrn not in str(refused.value)
        assert app.position() == position
        patient = app.get_patient(first.id)
        assert patient.version == 1
        assert [n.family for n in patient.demographics.name] == [FAMILY]

    def test_invalid_demographics_write_nothing(self, app: RecordsApplication) -> None:
        position = app.position()

        with pytest.raises(InvalidDemographics):
            app.register_patient(unique_mrn(), demographics(birth_date="2999-01-01"), actor())

        assert app.position() == position

    def test_an_update_on_the_current_version_is_saved(self, app: RecordsApplication) -> None:
        registered = app.register_patient(unique_mrn(), demographics(), actor())

        updated = app.update_demographics(registered.id, 1, renamed("Wed"), actor("nurse"))

        assert updated.version == 2
        assert updated.position > registered.position
        assert app.get_patient(registered.id).demographics.name[0].family == "Wed"

    def test_a_stale_update_is_refused(self, app: RecordsApplication) -> None:
        registered = app.register_patient(unique_mrn(), demographics(), actor())
        app.update_demographics(registered.id, 1, renamed("Second"), actor())
        position = app.position()

        with pytest.raises(VersionConflict):
            app.update_demographics(registered.id, 1, renamed("Lost"), actor())

        assert app.position() == position
        assert app.get_patient(registered.id).demographics.name[0].family == "Second"

    def test_of_two_concurrent_updates_exactly_one_wins(self, open_app: OpenApp) -> None:
        first, second = open_app(), open_app()
        registered = first.register_patient(unique_mrn(), demographics(), actor())
        both_loaded = threading.Barrier(2, timeout=10)
        # both writers load version 1 before either saves
        for app in {id(first): first, id(second): second}.values():
            load = app.get_patient

            def load_then_wait(patient_id, load=load):  # type: ignore[no-untyped-def]
                patient = load(patient_id)
                both_loaded.wait()
                return patient

            app.get_patient = load_then_wait  # type: ignore[method-assign]

        def update(app: RecordsApplication, family: str) -> Saved | VersionConflict:
            try:
                return app.update_demographics(registered.id, 1, renamed(family), actor())
            except VersionConflict as conflict:
                return conflict

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(update, [first, second], ["Alpha", "Beta"]))

        winners = [o for o in outcomes if isinstance(o, Saved)]
        losers = [o for o in outcomes if isinstance(o, VersionConflict)]
        assert (len(winners), len(losers)) == (1, 1)
        # read past the barrier hook, straight from the store
        stored: Patient = open_app().repository.get(registered.id)
        assert isinstance(stored, Patient)
        assert stored.version == 2
        winner = "Alpha" if outcomes[0] is winners[0] else "Beta"
        assert stored.demographics.name[0].family == winner

    def test_an_allergy_is_recorded_and_refuted_once(self, app: RecordsApplication) -> None:
        patient = app.register_patient(unique_mrn(), demographics(), actor())

        recorded = app.record_allergy(patient.id, allergy(), actor("physician", "doc-1"))
        stored = app.get_allergy(recorded.id)
        assert (stored.patient_id, stored.version, stored.recorder_id) == (
            patient.id,
            1,
            "doc-1",
        )

        refuted = app.refute_allergy(recorded.id, 1, "tested negative", actor("physician"))
        assert refuted.version == 2
        assert app.get_allergy(recorded.id).verification_status == "refuted"

        position = app.position()
        with pytest.raises(AllergyAlreadyRefuted):
            app.refute_allergy(recorded.id, None, "again", actor("physician"))
        assert app.position() == position

    def test_a_stale_refutation_is_refused(self, app: RecordsApplication) -> None:
        patient = app.register_patient(unique_mrn(), demographics(), actor())
        recorded = app.record_allergy(patient.id, allergy(), actor("physician"))

        with pytest.raises(VersionConflict):
            app.refute_allergy(recorded.id, 2, None, actor("physician"))
        assert not app.get_allergy(recorded.id).is_refuted

    def test_an_allergy_needs_a_registered_patient(self, app: RecordsApplication) -> None:
        position = app.position()
        with pytest.raises(PatientNotFound):
            app.record_allergy(
                "3f0e5a4e-0000-4000-8000-000000000000", allergy(), actor("physician")
            )
        assert app.position() == position

    def test_unknown_malformed_and_mistyped_ids_are_not_found(
        self, app: RecordsApplication
    ) -> None:
        patient = app.register_patient(unique_mrn(), demographics(), actor())
        recorded = app.record_allergy(patient.id, allergy(), actor("physician"))

        missing_ids: list[str | UUID] = [
            "not-a-uuid",
            "3f0e5a4e-0000-4000-8000-000000000000",
            recorded.id,
        ]
        for missing in missing_ids:
            with pytest.raises(PatientNotFound):
                app.get_patient(missing)
        with pytest.raises(AllergyNotFound):
            app.get_allergy(patient.id)

    def test_positions_increase_with_every_command(self, app: RecordsApplication) -> None:
        first = app.register_patient(unique_mrn(), demographics(), actor())
        second = app.register_patient(unique_mrn(), demographics(), actor())
        updated = app.update_demographics(first.id, 1, renamed("Later"), actor())
        recorded = app.record_allergy(second.id, allergy(), actor("physician"))
        refuted = app.refute_allergy(recorded.id, 1, None, actor("physician"))

        positions = [s.position for s in (first, second, updated, recorded, refuted)]
        assert positions == sorted(set(positions))
        assert refuted.position == app.position()


class TestRecordsApplicationOnSQLite(TestRecordsApplication):
    @pytest.fixture
    def open_app(self, tmp_path: Path) -> Iterator[OpenApp]:
        settings = settings_for_test(RecordsSettings, tmp_path)
        opened: list[RecordsApplication] = []

        def open_app() -> RecordsApplication:
            opened.append(RecordsApplication.from_settings(settings))
            return opened[-1]

        yield open_app
        for app in opened:
            app.close()
        assert (tmp_path / "records" / "events.sqlite3").is_file()


@pytest.mark.postgres
class TestRecordsApplicationOnPostgreSQL(TestRecordsApplication):
    @pytest.fixture
    def open_app(
        self, tmp_path: Path, postgres_url: str, fresh_schema_suffix: str
    ) -> Iterator[OpenApp]:
        schema = f"records_test_{fresh_schema_suffix}"
        settings = settings_for_test(
            RecordsSettings, tmp_path, database_url=postgres_url, db_schema=schema
        )
        opened: list[RecordsApplication] = []

        def open_app() -> RecordsApplication:
            opened.append(RecordsApplication.from_settings(settings))
            return opened[-1]

        yield open_app
        for app in opened:
            app.close()
        engine = make_engine(settings, "records")
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
