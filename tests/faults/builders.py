"""FHIR payloads and names for the fault drills.

The payloads are the shared samples of ``ehr_events.fhirsamples``; every drill
gets a family name of its own, so its searches see only its own patients.
"""

from __future__ import annotations

import uuid
from typing import Any

from ehr_events import fhirsamples


def family_name(prefix: str) -> str:
    """A family name no other drill uses; same length per prefix, so none is a prefix of another."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def mrn(family: str, index: int) -> str:
    """An MRN of a drill's ``index``-th write, in the records service's normal form."""
    return f"MRN-{family.upper()}-{index:04d}"


def patient(
    family: str,
    given: str,
    *,
    mrn: str | None = None,
    birth_date: str = "1979-05-17",
    gender: str = "female",
) -> dict[str, Any]:
    return fhirsamples.patient(
        family,
        given,
        mrn=mrn or f"MRN-{uuid.uuid4().hex[:10].upper()}",
        birth_date=birth_date,
        gender=gender,
    )


def unborn_patient(family: str, given: str, *, mrn: str) -> dict[str, Any]:
    """A Patient the gateway accepts but the records service refuses (born in the future)."""
    return patient(family, given, mrn=mrn, birth_date="2999-01-01")


def update_of(resource: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A PUT body from a read resource: server-managed ``meta`` dropped, ``changes`` applied."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    body.update(changes)
    return body
