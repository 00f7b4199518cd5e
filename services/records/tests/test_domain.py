"""Rules of the records domain, without any store."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import pytest
from eventsourcing.domain import Aggregate

from records.domain import (
    AllergyAlreadyRefuted,
    AllergyIntolerance,
    InvalidAllergy,
    InvalidDemographics,
    Patient,
    VersionConflict,
)
from records.domain.values import latest_birth_date

from .builders import BIRTH_DATE, FAMILY, actor, allergy, demographics, renamed


def replay(aggregate: Aggregate, events: Sequence[Any]) -> Aggregate:
    """The aggregate rebuilt from its events, as the repository would."""
    copy = None
    for domain_event in events:
        copy = domain_event.mutate(copy)
    assert copy is not None
    return copy


# patients


def test_patient_id_is_derived_from_the_normalised_mrn() -> None:
    assert Patient.create_id(" mrn-0042 ") == Patient.create_id("MRN-0042")
    assert Patient.create_id("MRN-0042") != Patient.create_id("MRN-0043")
    assert Patient.register("mrn-0042", demographics(), actor()).id == Patient.create_id("MRN-0042")


def test_registration_records_the_whole_demographics_and_the_actor() -> None:
    patient = Patient.register(" mrn-7 ", demographics(), actor(subject="clerk-9"))

    [registered] = patient.collect_events()
    assert isinstance(registered, Patient.Registered)
    assert registered.mrn == "MRN-7"
    assert registered.demographics["name"][0]["family"] == FAMILY
    assert registered.demographics["birth_date"] == BIRTH_DATE
    assert registered.actor == actor(subject="clerk-9")
    assert patient.version == 1
    assert patient.demographics.birth_date == date(1971, 3, 14)


def test_replaying_the_events_rebuilds_the_same_patient() -> None:
    patient = Patient.register("MRN-8", demographics(), actor())
    patient.update_demographics(renamed("Other"), actor(), expected_version=1)
    events = patient.collect_events()

    assert replay(patient, events) == patient


def test_a_birth_date_in_the_future_is_refused() -> None:
    with pytest.raises(InvalidDemographics) as refused:
        Patient.register(
            "MRN-1", demographics(birth_date="2024-06-02"), actor(), today=date(2024, 6, 1)
        )
    assert refused.value.fields == ("birth_date",)


def test_a_birth_date_of_today_is_accepted() -> None:
    patient = Patient.register(
        "MRN-1", demographics(birth_date="2024-06-01"), actor(), today=date(2024, 6, 1)
    )
    assert patient.demographics.birth_date == date(2024, 6, 1)


def test_today_is_where_it_is_latest_on_earth() -> None:
    # a baby born just after midnight in Kiribati must not be "in the future"
    assert latest_birth_date() >= datetime.now(UTC).date()


def test_a_birth_date_before_1900_is_refused() -> None:
    with pytest.raises(InvalidDemographics) as refused:
        Patient.register("MRN-1", demographics(birth_date="1899-12-31"), actor())
    assert refused.value.fields == ("birth_date",)


def test_an_impossible_date_is_refused() -> None:
    with pytest.raises(InvalidDemographics) as refused:
        Patient.register("MRN-1", demographics(birth_date="2024-02-30"), actor())
    assert refused.value.fields == ("birth_date",)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sex": "F"}, "sex"),
        ({"name": []}, "name"),
        ({"identifiers": []}, "identifiers"),
        ({"name": [{"family": "  "}]}, "name.0.family"),
        ({"telecom": [{"system": "pigeon", "value": "x"}]}, "telecom.0.system"),
    ],
)
def test_invalid_demographics_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(InvalidDemographics) as refused:
        Patient.register("MRN-1", demographics(**overrides), actor())
    assert field in refused.value.fields


def test_refusals_never_quote_the_submitted_values() -> None:
    bad = demographics(sex=FAMILY, birth_date="1899-01-01")
    with pytest.raises(InvalidDemographics) as refused:
        Patient.register("MRN-SECRET-1", bad, actor())
    assert FAMILY not in str(refused.value)
    assert "MRN-SECRET-1" not in str(refused.value)


@pytest.mark.parametrize("mrn", ["", "   ", "has space", "x" * 65, "semi;colon"])
def test_a_malformed_mrn_is_refused(mrn: str) -> None:
    with pytest.raises(InvalidDemographics) as refused:
        Patient.register(mrn, demographics(), actor())
    assert refused.value.fields == ("mrn",)


def test_an_update_replaces_the_demographics_and_bumps_the_version() -> None:
    patient = Patient.register("MRN-1", demographics(), actor())
    patient.update_demographics(renamed("Newname"), actor("nurse"), expected_version=1)

    assert patient.version == 2
    assert [n.family for n in patient.demographics.name] == ["Newname"]
    updated = patient.collect_events()[-1]
    assert isinstance(updated, Patient.DemographicsUpdated)
    assert updated.actor["role"] == "nurse"


def test_an_update_decided_on_a_stale_version_is_refused_and_changes_nothing() -> None:
    patient = Patient.register("MRN-1", demographics(), actor())
    patient.update_demographics(renamed("Second"), actor(), expected_version=1)
    patient.collect_events()

    with pytest.raises(VersionConflict) as refused:
        patient.update_demographics(renamed("Third"), actor(), expected_version=1)

    assert (refused.value.expected, refused.value.actual) == (1, 2)
    assert patient.version == 2
    assert patient.collect_events() == []
    assert [n.family for n in patient.demographics.name] == ["Second"]


def test_an_invalid_update_changes_nothing() -> None:
    patient = Patient.register("MRN-1", demographics(), actor())
    patient.collect_events()

    with pytest.raises(InvalidDemographics):
        patient.update_demographics(demographics(sex="?"), actor(), expected_version=1)

    assert patient.version == 1
    assert patient.collect_events() == []


# allergies


def test_an_allergy_records_its_details_patient_and_recorder() -> None:
    patient_id = uuid.uuid4()
    recorded = AllergyIntolerance.record(patient_id, allergy(), actor("physician", "doc-1"))

    assert recorded.patient_id == patient_id
    assert recorded.code.text == "Penicillin"
    assert recorded.category == ["medication"]
    assert recorded.reactions[0].severity == "moderate"
    assert recorded.recorder_id == "doc-1"
    assert recorded.recorded_at.tzinfo is not None
    assert not recorded.is_refuted


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"code": {"coding": [{"system": "http://snomed.info/sct"}]}}, "code"),
        ({"verification_status": "refuted"}, "verification_status"),
        ({"criticality": "extreme"}, "criticality"),
        ({"category": ["weather"]}, "category.0"),
        ({"reactions": [{"manifestation": []}]}, "reactions.0.manifestation"),
    ],
)
def test_invalid_allergies_are_refused_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(InvalidAllergy) as refused:
        AllergyIntolerance.record(uuid.uuid4(), allergy(**overrides), actor("physician"))
    assert field in refused.value.fields


def test_a_recording_time_without_time_zone_is_refused() -> None:
    with pytest.raises(InvalidAllergy):
        AllergyIntolerance.record(
            uuid.uuid4(), allergy(), actor("physician"), recorded_at=datetime(2024, 1, 1)
        )


def test_refuting_marks_the_allergy_refuted_and_names_the_patient() -> None:
    recorded = AllergyIntolerance.record(uuid.uuid4(), allergy(), actor("physician"))
    recorded.refute(" skin test negative ", actor("physician"), expected_version=1)

    assert recorded.is_refuted
    assert recorded.verification_status == "refuted"
    assert recorded.refuted_reason == "skin test negative"
    refuted = recorded.collect_events()[-1]
    assert isinstance(refuted, AllergyIntolerance.Refuted)
    assert refuted.patient_id == recorded.patient_id


def test_refuting_twice_is_refused() -> None:
    recorded = AllergyIntolerance.record(uuid.uuid4(), allergy(), actor("physician"))
    recorded.refute(None, actor("physician"))

    with pytest.raises(AllergyAlreadyRefuted):
        recorded.refute("again", actor("physician"))
    assert recorded.version == 2


def test_refuting_on_a_stale_version_is_refused() -> None:
    recorded = AllergyIntolerance.record(uuid.uuid4(), allergy(), actor("physician"))

    with pytest.raises(VersionConflict):
        recorded.refute(None, actor("physician"), expected_version=2)
    assert not recorded.is_refuted


def test_a_refutation_reason_has_a_limit() -> None:
    recorded = AllergyIntolerance.record(uuid.uuid4(), allergy(), actor("physician"))

    with pytest.raises(InvalidAllergy) as refused:
        recorded.refute("x" * 1001, actor("physician"))
    assert refused.value.fields == ("reason",)


def test_replaying_the_events_rebuilds_the_same_allergy() -> None:
    recorded = AllergyIntolerance.record(uuid.uuid4(), allergy(), actor("physician"))
    recorded.refute("wrong patient", actor("physician"))
    events = recorded.collect_events()

    assert replay(recorded, events) == recorded


def test_patient_ids_depend_on_the_deployment_key_so_they_do_not_reveal_the_mrn() -> None:
    from records.domain import patient_namespace

    one, other = patient_namespace("key-one"), patient_namespace("key-two")
    assert Patient.create_id("MRN-0042", one) == Patient.create_id(" mrn-0042 ", one)
    assert Patient.create_id("MRN-0042", one) != Patient.create_id("MRN-0042", other)
    registered = Patient.register("MRN-0042", demographics(), actor(), namespace=one)
    assert registered.id == Patient.create_id("MRN-0042", one)


def test_the_development_patient_id_key_is_refused_outside_development() -> None:
    import pytest

    from ehr_events.config import DefaultSecretError
    from ehr_events.testing import random_cipher_key
    from records.config import RecordsSettings

    with pytest.raises(ValueError, match="EHR_PATIENT_ID_KEY"):
        RecordsSettings(profile="production", cipher_key=random_cipher_key())
    assert issubclass(DefaultSecretError, ValueError)
