"""Data builders for the records tests.

The names, birth dates and MRNs here are distinctive on purpose: tests search
for them in error bodies to prove no PHI leaks.
"""

from __future__ import annotations

import uuid
from typing import Any

#: A family name no error message could contain by accident.
FAMILY = "Quintavalle-Zebrowski"
GIVEN = "Philomena"
BIRTH_DATE = "1971-03-14"


def unique_mrn() -> str:
    return f"MRN-{uuid.uuid4().hex[:12].upper()}"


def actor(role: str = "frontdesk", subject: str = "user-1") -> dict[str, str]:
    return {"sub": subject, "role": role, "org": "org-test"}


def demographics(**overrides: Any) -> dict[str, Any]:
    """Whole demographics, JSON-ready, as both the API and the domain accept them."""
    data: dict[str, Any] = {
        "identifiers": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123-45-6789"}],
        "name": [{"family": FAMILY, "given": [GIVEN], "use": "official"}],
        "birth_date": BIRTH_DATE,
        "sex": "female",
        "telecom": [{"system": "phone", "value": "+1 555 0100", "use": "mobile"}],
        "address": [{"line": ["1 Main Street"], "city": "Springfield", "country": "US"}],
    }
    data.update(overrides)
    return data


def patient_body(mrn: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The body of ``POST /patients``."""
    return {"mrn": mrn or unique_mrn(), **demographics(**overrides)}


def demographics_body(expected_version: int, **overrides: Any) -> dict[str, Any]:
    """The body of ``PUT /patients/{id}/demographics``."""
    return {"expected_version": expected_version, **demographics(**overrides)}


def renamed(family: str) -> dict[str, Any]:
    return demographics(name=[{"family": family, "given": [GIVEN]}])


def allergy(**overrides: Any) -> dict[str, Any]:
    """An allergy to penicillin with hives, as the API and the domain accept it."""
    data: dict[str, Any] = {
        "code": {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "91936005",
                    "display": "Allergy to penicillin",
                }
            ],
            "text": "Penicillin",
        },
        "clinical_status": "active",
        "verification_status": "confirmed",
        "type": "allergy",
        "category": ["medication"],
        "criticality": "high",
        "reactions": [{"manifestation": [{"text": "Hives"}], "severity": "moderate"}],
        "note": "Reaction in 2019.",
    }
    data.update(overrides)
    return data
