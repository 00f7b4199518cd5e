"""The chart projection: events in, current FHIR R4 resources and search rows out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import select

from ehr_events.projection import ProjectionRunner
from projections.chart import chart_patient_identifiers, chart_patient_names, metadata
from projections.config import ProjectionsSettings
from projections.queries import get_resource, search_patients
from projections.readmodels import make_runner

from .builders import (
    BASE_TIME,
    HOSPITAL_MRN_SYSTEM,
    NATIONAL_ID_SYSTEM,
    allergy_recorded,
    allergy_refuted,
    demographics_updated,
    patient_registered,
)
from .fhir_checks import assert_valid_fhir

PATIENT = "0b7c3a52-5f43-4f7e-9d1e-2f1a0c9b8e01"
ALLERGY = "a1e8d2f4-7c1b-4b8e-8f4e-6b2d9c0a1f02"


def chart_checksum(runner: ProjectionRunner) -> str:
    """A digest of every row of every chart table."""
    digest = hashlib.sha256()
    with runner.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            digest.update(table.name.encode())
            digest.update(json.dumps(sorted(repr(tuple(r)) for r in rows)).encode())
    return digest.hexdigest()


class ChartOnSQLite:
    @pytest.fixture
    def settings(self, sqlite_settings: ProjectionsSettings) -> ProjectionsSettings:
        return sqlite_settings

    @pytest.fixture
    def runner(self, settings: ProjectionsSettings) -> Iterator[ProjectionRunner]:
        runner = make_runner(settings, "chart")
        yield runner
        runner.engine.dispose()

    def test_registration_gives_a_valid_fhir_patient(self, runner: ProjectionRunner) -> None:
        registered = patient_registered(PATIENT, mrn="MRN-0001")
        assert runner.apply_envelopes([registered]) == 1

        stored = get_resource(runner.engine, "Patient", PATIENT)
        assert stored is not None
        patient = stored.resource
        assert_valid_fhir(patient)
        assert stored.version == 1
        assert stored.last_updated == registered[0].time
        assert patient["meta"] == {
            "versionId": "1",
            "lastUpdated": registered[0].time.isoformat(),
        }
        mrn = patient["identifier"][0]
        assert mrn["type"]["coding"][0]["code"] == "MR"
        assert (mrn["system"], mrn["value"]) == (HOSPITAL_MRN_SYSTEM, "MRN-0001")
        assert patient["identifier"][1] == {"system": NATIONAL_ID_SYSTEM, "value": "123-45-6789"}
        assert patient["name"] == [
            {"use": "official", "family": "Müller", "given": ["Anna", "Maria"]}
        ]
        assert (patient["gender"], patient["birthDate"]) == ("female", "1980-02-29")
        assert patient["address"][0]["postalCode"] == "8001"
        assert "postal_code" not in patient["address"][0]
        assert patient["telecom"][0]["system"] == "phone"

    def test_an_mrn_not_among_the_identifiers_gets_the_configured_system(
        self, runner: ProjectionRunner, settings: ProjectionsSettings
    ) -> None:
        runner.apply_envelopes([patient_registered(PATIENT, mrn="MRN-0009", list_mrn=False)])
        patient = get_resource(runner.engine, "Patient", PATIENT).resource  # type: ignore[union-attr]
        assert_valid_fhir(patient)
        mrns = [i for i in patient["identifier"] if i.get("type")]
        assert [(i["system"], i["value"]) for i in mrns] == [(settings.mrn_system, "MRN-0009")]

    def test_demographics_update_makes_version_2_and_replaces_search_rows(
        self, runner: ProjectionRunner
    ) -> None:
        runner.apply_envelopes([patient_registered(PATIENT)])
        runner.apply_envelopes(
            [
                demographics_updated(
                    PATIENT,
                    version=2,
                    family="Schmidt",
                    given=("Eva",),
                    birth_date=date(1981, 3, 1),
                    identifiers=[{"system": NATIONAL_ID_SYSTEM, "value": "999"}],
                )
            ]
        )

        stored = get_resource(runner.engine, "Patient", PATIENT)
        assert stored is not None and stored.version == 2
        assert stored.resource["meta"]["versionId"] == "2"
        assert stored.resource["name"][0]["family"] == "Schmidt"
        assert_valid_fhir(stored.resource)
        with runner.engine.connect() as conn:
            names = set(conn.execute(select(chart_patient_names.c[1:])).all())
            identifiers = set(conn.execute(select(chart_patient_identifiers.c[1:])).all())
        assert names == {("schmidt", None), (None, "eva")}
        assert identifiers == {(HOSPITAL_MRN_SYSTEM, "MRN-0001"), (NATIONAL_ID_SYSTEM, "999")}
        # the old values no longer find the patient, the new ones do
        assert search_patients(runner.engine, family=["Müller"]).total == 0
        assert search_patients(runner.engine, identifier=["123-45-6789"]).total == 0
        assert search_patients(runner.engine, birthdate=["1981-03-01"]).total == 1

    def test_an_update_keeps_the_mrn_the_registration_gave(self, runner: ProjectionRunner) -> None:
        runner.apply_envelopes([patient_registered(PATIENT, mrn="MRN-0042", list_mrn=False)])
        runner.apply_envelopes([demographics_updated(PATIENT, version=2, mrn=None)])
        patient = get_resource(runner.engine, "Patient", PATIENT).resource  # type: ignore[union-attr]
        assert [i["value"] for i in patient["identifier"] if i.get("type")] == ["MRN-0042"]
        assert search_patients(runner.engine, identifier=["MRN-0042"]).total == 1

    def test_the_same_envelope_twice_is_applied_once(self, runner: ProjectionRunner) -> None:
        registered = patient_registered(PATIENT)
        assert runner.apply_envelopes([registered]) == 1
        before = chart_checksum(runner)

        assert runner.apply_envelopes([registered]) == 0
        assert runner.applied_count() == 1
        assert get_resource(runner.engine, "Patient", PATIENT).version == 1  # type: ignore[union-attr]
        assert chart_checksum(runner) == before

    def test_an_older_version_after_a_newer_one_is_ignored(self, runner: ProjectionRunner) -> None:
        runner.apply_envelopes([patient_registered(PATIENT)])
        runner.apply_envelopes([demographics_updated(PATIENT, version=3, family="Newest")])
        before = chart_checksum(runner)

        assert (
            runner.apply_envelopes([demographics_updated(PATIENT, version=2, family="Stale")]) == 1
        )

        stored = get_resource(runner.engine, "Patient", PATIENT)
        assert stored is not None and stored.version == 3
        assert stored.resource["name"][0]["family"] == "Newest"
        assert search_patients(runner.engine, family=["stale"]).total == 0
        assert chart_checksum(runner) == before

    def test_a_registration_after_an_update_adds_only_its_mrn(
        self, runner: ProjectionRunner
    ) -> None:
        runner.apply_envelopes([demographics_updated(PATIENT, version=2, mrn=None, family="New")])
        runner.apply_envelopes([patient_registered(PATIENT, mrn="MRN-0007", family="Old")])

        stored = get_resource(runner.engine, "Patient", PATIENT)
        assert stored is not None and stored.version == 2
        assert stored.resource["name"][0]["family"] == "New"
        assert stored.resource["identifier"][0]["value"] == "MRN-0007"
        assert_valid_fhir(stored.resource)
        assert search_patients(runner.engine, identifier=["MRN-0007"]).total == 1

    def test_a_recorded_allergy_is_a_valid_allergy_intolerance(
        self, runner: ProjectionRunner
    ) -> None:
        runner.apply_envelopes([patient_registered(PATIENT), allergy_recorded(ALLERGY, PATIENT)])

        stored = get_resource(runner.engine, "AllergyIntolerance", ALLERGY)
        assert stored is not None and stored.version == 1
        allergy = stored.resource
        assert_valid_fhir(allergy)
        assert allergy["patient"] == {"reference": f"Patient/{PATIENT}"}
        assert allergy["clinicalStatus"]["coding"][0]["code"] == "active"
        assert allergy["verificationStatus"]["coding"][0]["code"] == "confirmed"
        assert allergy["recorder"] == {"reference": "Practitioner/practitioner-1"}
        assert allergy["reaction"][0]["severity"] == "moderate"
        assert allergy["note"] == [{"text": "Reported by the patient."}]
        assert stored.patient_id == PATIENT

    def test_a_refuted_allergy_is_refuted_inactive_and_valid(
        self, runner: ProjectionRunner
    ) -> None:
        runner.apply_envelopes(
            [allergy_recorded(ALLERGY, PATIENT), allergy_refuted(ALLERGY, PATIENT, version=2)]
        )

        stored = get_resource(runner.engine, "AllergyIntolerance", ALLERGY)
        assert stored is not None and stored.version == 2
        allergy = stored.resource
        assert_valid_fhir(allergy)
        assert allergy["verificationStatus"]["coding"][0]["code"] == "refuted"
        # FHIR R4 ait-1: only entered-in-error may lack a clinical status
        assert allergy["clinicalStatus"]["coding"][0]["code"] == "inactive"
        assert allergy["code"]["text"] == "Penicillin"
        assert allergy["note"][-1]["text"] == "Tolerated."

    def test_a_refutation_before_its_recording_still_ends_refuted_with_the_code(
        self, runner: ProjectionRunner
    ) -> None:
        runner.apply_envelopes([allergy_refuted(ALLERGY, PATIENT, version=2)])
        early = get_resource(runner.engine, "AllergyIntolerance", ALLERGY)
        assert early is not None
        assert_valid_fhir(early.resource)

        runner.apply_envelopes([allergy_recorded(ALLERGY, PATIENT, version=1)])

        stored = get_resource(runner.engine, "AllergyIntolerance", ALLERGY)
        assert stored is not None and stored.version == 2
        assert stored.resource["verificationStatus"]["coding"][0]["code"] == "refuted"
        assert stored.resource["code"]["text"] == "Penicillin"
        assert [n["text"] for n in stored.resource["note"]] == [
            "Reported by the patient.",
            "Tolerated.",
        ]
        assert_valid_fhir(stored.resource)

    def test_last_updated_is_the_event_time_with_its_zone(self, runner: ProjectionRunner) -> None:
        runner.apply_envelopes([patient_registered(PATIENT)])
        stored = get_resource(runner.engine, "Patient", PATIENT)
        assert stored is not None
        assert stored.last_updated.utcoffset() is not None
        assert stored.last_updated > BASE_TIME


class TestChartOnSQLite(ChartOnSQLite):
    pass


@pytest.mark.postgres
class TestChartOnPostgreSQL(ChartOnSQLite):
    @pytest.fixture
    def settings(self, postgres_settings: ProjectionsSettings) -> ProjectionsSettings:
        return postgres_settings
