"""AllergyIntolerance: FHIR R4 JSON to the records service's command, and back.

The patient comes from ``patient.reference`` (``Patient/<id>``, or the same under
this server's base URL). Status codes come from their HL7 code systems; a
missing clinical status is ``active`` and a missing verification status is
``unconfirmed`` (nothing confirmed it). Refuting an allergy is not a create, so
``refuted`` and ``entered-in-error`` are refused. ``recordedDate`` and
``recorder`` are set by the server from the event and the token, so are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.allergyintolerance import AllergyIntolerance

from .parsing import (
    ID_PATTERN,
    Errors,
    check_code,
    drop_empty,
    only,
    parse_json,
    record_meta,
    require,
    validate_resource,
)

CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
VERIFICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

CLINICAL_STATUSES = frozenset({"active", "inactive", "resolved"})
VERIFICATION_STATUSES = frozenset({"unconfirmed", "presumed", "confirmed"})
TYPES = frozenset({"allergy", "intolerance"})
CATEGORIES = frozenset({"food", "medication", "environment", "biologic"})
CRITICALITIES = frozenset({"low", "high", "unable-to-assess"})
SEVERITIES = frozenset({"mild", "moderate", "severe"})

ALLERGY_ELEMENTS = frozenset(
    {
        "resourceType",
        "id",
        "meta",
        "text",
        "recordedDate",
        "recorder",
        "clinicalStatus",
        "verificationStatus",
        "type",
        "category",
        "criticality",
        "code",
        "patient",
        "reaction",
        "note",
    }
)
CONCEPT_ELEMENTS = frozenset({"coding", "text"})
CODING_ELEMENTS = frozenset({"system", "code", "display"})
REACTION_ELEMENTS = frozenset({"manifestation", "severity", "description"})
REFERENCE_ELEMENTS = frozenset({"reference", "display"})


@dataclass(frozen=True)
class AllergyWrite:
    """An AllergyIntolerance as the records service takes it."""

    patient_id: str
    command: dict[str, Any]


def parse_allergy(body: bytes, base_url: str = "") -> AllergyWrite:
    """The records command of a request body holding a FHIR AllergyIntolerance."""
    data = parse_json(body)
    if not isinstance(data, dict):
        errors = Errors()
        errors.add("AllergyIntolerance", "must be a JSON object", "structure")
        errors.raise_if_any(400)
    return allergy_write(data, base_url)


def allergy_write(resource: dict[str, Any], base_url: str = "") -> AllergyWrite:
    """Validate a FHIR AllergyIntolerance and map it to ``POST /patients/{id}/allergies``."""
    validate_resource(resource, "AllergyIntolerance", AllergyIntolerance)
    errors = Errors()
    root = "AllergyIntolerance"
    only(resource, ALLERGY_ELEMENTS, root, errors)

    patient_id = _patient_id(resource.get("patient") or {}, base_url, errors)
    clinical = _status(
        resource.get("clinicalStatus"),
        CLINICAL_SYSTEM,
        CLINICAL_STATUSES,
        f"{root}.clinicalStatus",
        errors,
        default="active",
    )
    verification = _status(
        resource.get("verificationStatus"),
        VERIFICATION_SYSTEM,
        VERIFICATION_STATUSES,
        f"{root}.verificationStatus",
        errors,
        default="unconfirmed",
    )
    check_code(resource.get("type"), TYPES, f"{root}.type", errors)
    categories = list(resource.get("category") or ())
    for i, category in enumerate(categories):
        check_code(category, CATEGORIES, f"{root}.category[{i}]", errors)
    check_code(resource.get("criticality"), CRITICALITIES, f"{root}.criticality", errors)

    code = resource.get("code")
    if code is None:
        errors.add(f"{root}.code", "is required", "required")
        concept = None
    else:
        concept = concept_command(code, f"{root}.code", errors)

    reactions: list[dict[str, Any]] = []
    for i, reaction in enumerate(resource.get("reaction") or ()):
        path = f"{root}.reaction[{i}]"
        only(reaction, REACTION_ELEMENTS, path, errors)
        manifestations = reaction.get("manifestation") or ()
        if not manifestations:
            errors.add(f"{path}.manifestation", "is required", "required")
        check_code(reaction.get("severity"), SEVERITIES, f"{path}.severity", errors)
        reactions.append(
            {
                "manifestation": [
                    concept_command(m, f"{path}.manifestation[{j}]", errors)
                    for j, m in enumerate(manifestations)
                ],
                "severity": reaction.get("severity"),
                "description": reaction.get("description"),
            }
        )

    notes = resource.get("note") or ()
    if len(notes) > 1:
        errors.add(f"{root}.note", "at most one note is supported", "not-supported")
    for i, note in enumerate(notes):
        only(note, frozenset({"text"}), f"{root}.note[{i}]", errors)

    errors.raise_if_any(422)
    assert patient_id is not None
    return AllergyWrite(
        patient_id=patient_id,
        command={
            "code": concept,
            "clinical_status": clinical,
            "verification_status": verification,
            "type": resource.get("type"),
            "category": categories,
            "criticality": resource.get("criticality"),
            "reactions": reactions,
            "note": notes[0].get("text") if notes else None,
        },
    )


def concept_command(concept: dict[str, Any], path: str, errors: Errors) -> dict[str, Any]:
    """A CodeableConcept as records keeps it: codings (system, code, display) and text."""
    only(concept, CONCEPT_ELEMENTS, path, errors)
    codings = []
    for i, coding in enumerate(concept.get("coding") or ()):
        only(coding, CODING_ELEMENTS, f"{path}.coding[{i}]", errors)
        codings.append(
            {
                "system": coding.get("system"),
                "code": coding.get("code"),
                "display": coding.get("display"),
            }
        )
    if not codings and not concept.get("text"):
        errors.add(path, "needs a coding or a text", "required")
    return {"coding": codings, "text": concept.get("text")}


def _status(
    concept: dict[str, Any] | None,
    system: str,
    allowed: frozenset[str],
    path: str,
    errors: Errors,
    *,
    default: str,
) -> str:
    if concept is None:
        return default
    only(concept, CONCEPT_ELEMENTS, path, errors)
    for i, coding in enumerate(concept.get("coding") or ()):
        only(coding, CODING_ELEMENTS, f"{path}.coding[{i}]", errors)
    codes = [
        c.get("code") for c in concept.get("coding") or () if c.get("system") in (None, system)
    ]
    if not codes or codes[0] not in allowed:
        errors.add(
            path,
            f"must be coded from {system} as one of " + ", ".join(sorted(allowed)),
            "code-invalid",
        )
        return default
    return str(codes[0])


def _patient_id(reference: dict[str, Any], base_url: str, errors: Errors) -> str | None:
    path = "AllergyIntolerance.patient"
    only(reference, REFERENCE_ELEMENTS, path, errors)
    require(reference, ("reference",), path, errors)
    value = str(reference.get("reference") or "")
    if base_url and value.startswith(base_url.rstrip("/") + "/"):
        value = value[len(base_url.rstrip("/")) + 1 :]
    kind, _, patient_id = value.partition("/")
    if value and (kind != "Patient" or not ID_PATTERN.match(patient_id)):
        errors.add(f"{path}.reference", "must reference Patient/<id>", "value")
        return None
    return patient_id or None


def allergy_resource(record: dict[str, Any]) -> dict[str, Any]:
    """A FHIR AllergyIntolerance from the records service's ``GET /allergies/{id}`` JSON.

    Used only when the chart has not caught up with a write the records service
    already holds; the chart's own rendering is preferred everywhere.
    """
    note = record.get("note")
    resource: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "id": str(record["id"]),
        "meta": record_meta(record),
        "clinicalStatus": _status_concept(CLINICAL_SYSTEM, record.get("clinical_status")),
        "verificationStatus": _status_concept(
            VERIFICATION_SYSTEM, record.get("verification_status")
        ),
        "type": record.get("type"),
        "category": record.get("category"),
        "criticality": record.get("criticality"),
        "code": _concept_resource(record.get("code")),
        "patient": {"reference": f"Patient/{record['patient_id']}"},
        "recordedDate": record.get("recorded_at"),
        "reaction": [
            drop_empty(
                {
                    "manifestation": [_concept_resource(m) for m in r.get("manifestation") or ()],
                    "severity": r.get("severity"),
                    "description": r.get("description"),
                }
            )
            for r in record.get("reactions") or ()
        ],
        "note": [{"text": note}] if note else None,
    }
    return drop_empty(resource)


def _status_concept(system: str, code: str | None) -> dict[str, Any] | None:
    return {"coding": [{"system": system, "code": code}]} if code else None


def _concept_resource(concept: dict[str, Any] | None) -> dict[str, Any] | None:
    if not concept:
        return None
    return drop_empty(
        {
            "coding": [drop_empty(dict(c)) for c in concept.get("coding") or ()],
            "text": concept.get("text"),
        }
    )
