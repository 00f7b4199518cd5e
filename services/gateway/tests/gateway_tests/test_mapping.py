"""FHIR resources to records commands and back, without I/O."""

from __future__ import annotations

import json

import pytest

from ehr_events.catalogue.records import CodeableConcept, Demographics, Reaction
from ehr_events.problems import Problem
from gateway.fhir.allergy import allergy_resource, allergy_write, parse_allergy
from gateway.fhir.parsing import fhir_path
from gateway.fhir.patient import parse_patient, patient_resource, patient_write

from .builders import (
    MR,
    chart_allergy,
    chart_patient,
    fhir_allergy,
    fhir_patient,
)


def fields_of(problem: Problem) -> set[str]:
    return {e["field"] for e in problem.errors or ()}


def as_record(command: dict, **extra: object) -> dict:
    """What the records service would answer for a registered command."""
    return {
        **command,
        "id": "p-1",
        "version": 1,
        "updated_at": "2025-01-02T03:04:05+00:00",
        **extra,
    }


# --- Patient --------------------------------------------------------------------------


def test_patient_maps_to_the_records_registration_command() -> None:
    write = patient_write(fhir_patient())

    assert write.registration() == {
        "mrn": "MRN-1001",
        "identifiers": [
            {"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "SSN-77", "use": "official"},
            {"system": "urn:ehr:mrn", "value": "MRN-1001", "use": "usual"},
        ],
        "name": [{"family": "Zebedee", "given": ["Ada", "Marie"], "use": "official"}],
        "birth_date": "1984-02-29",
        "sex": "female",
        "telecom": [{"system": "phone", "value": "+44 20 7946 0000", "use": "mobile"}],
        "address": [
            {
                "line": ["1 Harbour Street"],
                "city": "Leith",
                "state": "Lothian",
                "postal_code": "EH6 6AA",
                "country": "GB",
                "use": "home",
            }
        ],
    }


def test_patient_command_satisfies_the_records_event_schema() -> None:
    demographics = patient_write(fhir_patient()).demographics

    Demographics.model_validate(demographics)


def test_mrn_is_the_first_identifier_without_an_mr_type() -> None:
    patient = fhir_patient(
        identifier=[{"system": "urn:a", "value": "A-1"}, {"system": "urn:b", "value": "B-2"}]
    )

    assert patient_write(patient).mrn == "A-1"


def test_mrn_is_the_identifier_typed_mr_wherever_it_is() -> None:
    patient = fhir_patient(
        identifier=[
            {"system": "urn:a", "value": "A-1"},
            {"system": "urn:b", "value": "B-2", "type": MR},
        ]
    )

    assert patient_write(patient).mrn == "B-2"


def test_update_command_carries_the_expected_version_and_no_mrn() -> None:
    body = patient_write(fhir_patient()).update(expected_version=4)

    assert body["expected_version"] == 4
    assert "mrn" not in body
    assert body["birth_date"] == "1984-02-29"


def test_chart_patient_can_be_sent_back_unchanged() -> None:
    # what a client reads from the chart (meta, id, active, typed MRN) is a valid update
    original = patient_write(fhir_patient())
    chart = chart_patient(as_record(original.registration()))

    again = patient_write(chart)

    assert again == original


def test_patient_rendered_from_records_round_trips() -> None:
    original = patient_write(fhir_patient())
    resource = patient_resource(as_record(original.registration()))

    assert resource["meta"] == {"versionId": "1", "lastUpdated": "2025-01-02T03:04:05+00:00"}
    assert patient_write(resource) == original


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"birthDate": "1984-02-30"}, "Patient.birthDate"),
        ({"birthDate": "1984"}, "Patient.birthDate"),
        ({"name": [{"family": 5}]}, "Patient.name[0].family"),
        ({"name": "Zebedee"}, "Patient.name"),
        ({"favouriteColour": "blue"}, "Patient.favouriteColour"),
        ({"gender": "robot"}, "Patient.gender"),
        ({"name": [{"given": ["Ada"]}]}, "Patient.name[0].family"),
        ({"identifier": []}, "Patient.identifier"),
        ({"identifier": [{"value": "X"}]}, "Patient.identifier[0].system"),
        ({"deceasedBoolean": True}, "Patient.deceased"),
        ({"address": [{"district": "North"}]}, "Patient.address[0].district"),
        ({"telecom": [{"system": "pigeon", "value": "x"}]}, "Patient.telecom[0].system"),
        ({"resourceType": "Observation"}, "Patient.resourceType"),
    ],
)
def test_invalid_patient_names_the_field_without_echoing_values(body: dict, field: str) -> None:
    patient = fhir_patient(**body)

    with pytest.raises(Problem) as caught:
        patient_write(patient)

    problem = caught.value
    assert problem.status in (400, 422)
    assert any(f.startswith(field) for f in fields_of(problem)), fields_of(problem)
    rendered = json.dumps(problem.body())
    for value in ("Zebedee", "1984-02-30", "robot", "pigeon", "North", "Observation"):
        if value not in field:
            assert value not in rendered


def test_structural_errors_are_400_and_unsupported_content_is_422() -> None:
    with pytest.raises(Problem) as structural:
        patient_write(fhir_patient(birthDate="1984-13-01"))
    with pytest.raises(Problem) as unsupported:
        patient_write(fhir_patient(birthDate="1984-05"))

    assert structural.value.status == 400
    assert unsupported.value.status == 422


def test_malformed_json_is_a_400_structure_issue() -> None:
    with pytest.raises(Problem) as caught:
        parse_patient(b'{"resourceType": "Patient", ')

    assert caught.value.status == 400
    assert getattr(caught.value, "issue_code", None) == "structure"


def test_fhir_paths_name_list_items() -> None:
    assert fhir_path("Patient", "name.0.given.1") == "Patient.name[0].given[1]"


A = "AllergyIntolerance"

# --- AllergyIntolerance ---------------------------------------------------------------


def test_allergy_maps_to_the_records_command() -> None:
    write = allergy_write(fhir_allergy("p-42"))

    assert write.patient_id == "p-42"
    assert write.command == {
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "91936005", "display": "Penicillin"}
            ],
            "text": "Penicillin",
        },
        "clinical_status": "active",
        "verification_status": "confirmed",
        "type": "allergy",
        "category": ["medication"],
        "criticality": "high",
        "reactions": [
            {
                "manifestation": [
                    {
                        "coding": [
                            {
                                "system": "http://snomed.info/sct",
                                "code": "39579001",
                                "display": "Anaphylaxis",
                            }
                        ],
                        "text": None,
                    }
                ],
                "severity": "severe",
                "description": "Collapsed after the first dose",
            }
        ],
        "note": "Carries an adrenaline pen",
    }
    CodeableConcept.model_validate(write.command["code"])
    Reaction.model_validate(write.command["reactions"][0])


def test_allergy_defaults_are_active_and_unconfirmed() -> None:
    allergy = fhir_allergy()
    del allergy["clinicalStatus"], allergy["verificationStatus"]

    command = allergy_write(allergy).command

    assert (command["clinical_status"], command["verification_status"]) == ("active", "unconfirmed")


def test_allergy_patient_may_be_an_absolute_reference_under_our_base() -> None:
    allergy = fhir_allergy(patient={"reference": "https://ehr.example/fhir/Patient/p-9"})

    assert allergy_write(allergy, "https://ehr.example/fhir").patient_id == "p-9"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"patient": {"reference": "Group/g-1"}}, "AllergyIntolerance.patient.reference"),
        (
            {"patient": {"reference": "https://elsewhere/fhir/Patient/p-1"}},
            "AllergyIntolerance.patient",
        ),
        ({"code": None}, "AllergyIntolerance.code"),
        ({"criticality": "mid"}, "AllergyIntolerance.criticality"),
        ({"category": ["weather"]}, "AllergyIntolerance.category[0]"),
        (
            {"verificationStatus": {"coding": [{"code": "refuted"}]}},
            "AllergyIntolerance.verificationStatus",
        ),
        (
            {"clinicalStatus": {"coding": [{"system": "urn:other", "code": "active"}]}},
            "AllergyIntolerance.clinicalStatus",
        ),
        ({"reaction": [{"severity": "severe"}]}, "AllergyIntolerance.reaction[0].manifestation"),
        ({"onsetDateTime": "2020-01-01"}, "AllergyIntolerance.onset"),
        ({"note": [{"text": "a"}, {"text": "b"}]}, "AllergyIntolerance.note"),
        ({"mystery": 1}, "AllergyIntolerance.mystery"),
    ],
)
def test_invalid_allergy_names_the_field(overrides: dict, field: str) -> None:
    allergy = {k: v for k, v in fhir_allergy(**overrides).items() if v is not None}

    with pytest.raises(Problem) as caught:
        allergy_write(allergy)

    assert caught.value.status in (400, 422)
    assert any(f.startswith(field) for f in fields_of(caught.value)), fields_of(caught.value)


def test_chart_allergy_maps_to_the_same_command() -> None:
    original = allergy_write(fhir_allergy("p-1"))
    record = {
        **original.command,
        "id": "a-1",
        "patient_id": "p-1",
        "version": 1,
        "recorded_at": "2025-01-02T03:04:05+00:00",
    }

    assert allergy_write(chart_allergy(record)) == original
    assert allergy_write(allergy_resource(record)) == original


def test_allergy_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(Problem) as caught:
        parse_allergy(b"[1, 2]")

    assert caught.value.status == 400
