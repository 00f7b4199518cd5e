"""FHIR payloads shared by the end-to-end tests and the benchmark."""

from __future__ import annotations

import uuid
from typing import Any

MR_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}


def patient(
    family: str = "Quixotically",
    given: str = "Zebedee",
    *,
    mrn: str | None = None,
    birth_date: str = "1979-05-17",
    gender: str = "male",
) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [
            {
                "type": MR_TYPE,
                "system": "urn:ehr:mrn",
                "value": mrn or f"MRN-{uuid.uuid4().hex[:10]}",
            }
        ],
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth_date,
        "telecom": [{"system": "phone", "value": "+1 555 0100", "use": "home"}],
        "address": [{"line": ["12 Lantern Row"], "city": "Springfield", "postalCode": "01010"}],
    }


def allergy(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "patient": {"reference": f"Patient/{patient_id}"},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "code": "confirmed",
                }
            ]
        },
        "category": ["medication"],
        "criticality": "high",
        "code": {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "91936005",
                    "display": "Allergy to penicillin",
                }
            ]
        },
        "reaction": [{"manifestation": [{"text": "Hives"}], "severity": "moderate"}],
    }
