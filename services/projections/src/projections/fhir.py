"""Catalogue events rendered as FHIR R4 JSON (Patient, AllergyIntolerance).

Pure functions, no I/O. JSON follows FHIR's rules: no nulls, no empty arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ehr_events.catalogue.records import (
    Address,
    AllergyRecordedV1,
    CodeableConcept,
    ContactPoint,
    Demographics,
    HumanName,
    Identifier,
    Reaction,
)

IDENTIFIER_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
CLINICAL_STATUS_SYSTEM = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
VERIFICATION_STATUS_SYSTEM = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"

#: The identifier type of a medical record number.
MRN_TYPE: dict[str, Any] = {
    "coding": [{"system": IDENTIFIER_TYPE_SYSTEM, "code": "MR", "display": "Medical record number"}]
}

#: Clinical status of a refuted allergy. FHIR R4 ait-1 requires a clinical status unless
#: the record is entered-in-error; a disproven propensity means no risk: inactive.
REFUTED_CLINICAL_STATUS = "inactive"


def instant(moment: datetime) -> str:
    """A FHIR ``instant``: ISO 8601 in UTC, with its time zone."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def meta(version: int, last_updated: datetime) -> dict[str, str]:
    return {"versionId": str(version), "lastUpdated": instant(last_updated)}


def compact(value: dict[str, Any]) -> dict[str, Any]:
    """Drop None values and empty lists or objects (FHIR JSON has neither)."""
    return {
        k: v for k, v in value.items() if v is not None and (v or not isinstance(v, list | dict))
    }


def codeable_concept(concept: CodeableConcept) -> dict[str, Any]:
    return compact(
        {
            "coding": [
                compact({"system": c.system, "code": c.code, "display": c.display})
                for c in concept.coding
            ],
            "text": concept.text,
        }
    )


def status(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


# -- Patient -------------------------------------------------------------------
def mrn_identifier(system: str, value: str) -> dict[str, Any]:
    return {"use": "usual", "type": MRN_TYPE, "system": system, "value": value}


def is_mrn(identifier: dict[str, Any]) -> bool:
    codings = identifier.get("type", {}).get("coding", [])
    return any(c.get("system") == IDENTIFIER_TYPE_SYSTEM and c.get("code") == "MR" for c in codings)


def identifiers(
    listed: Iterable[Identifier], mrn: str | None, mrn_system: str
) -> list[dict[str, Any]]:
    """The patient's identifiers, the MRN first and typed ``MR``.

    An identifier of the demographics carrying the MRN's value is the MRN (its system
    is the registering organisation's); otherwise the MRN gets ``mrn_system``.
    """
    out: list[dict[str, Any]] = []
    mrn_seen = False
    for identifier in listed:
        item = _identifier(identifier)
        if mrn is not None and identifier.value == mrn and not mrn_seen:
            mrn_seen = True
            out.insert(0, {**item, "type": MRN_TYPE})
        else:
            out.append(item)
    if mrn is not None and not mrn_seen:
        out.insert(0, mrn_identifier(mrn_system, mrn))
    return out


# The builders below write what ``compact`` would keep of the full dict, key by key
# in the same order, without building and filtering it: a rebuild renders every
# patient. Required fields are always there; optional ones only when set.
def _identifier(identifier: Identifier) -> dict[str, Any]:
    if identifier.use is None:
        return {"system": identifier.system, "value": identifier.value}
    return {"use": identifier.use, "system": identifier.system, "value": identifier.value}


def human_name(name: HumanName) -> dict[str, Any]:
    out: dict[str, Any] = {} if name.use is None else {"use": name.use}
    out["family"] = name.family
    if name.given:
        out["given"] = list(name.given)
    return out


def contact_point(point: ContactPoint) -> dict[str, Any]:
    if point.use is None:
        return {"system": point.system, "value": point.value}
    return {"system": point.system, "value": point.value, "use": point.use}


def address(value: Address) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if value.use is not None:
        out["use"] = value.use
    if value.line:
        out["line"] = list(value.line)
    if value.city is not None:
        out["city"] = value.city
    if value.state is not None:
        out["state"] = value.state
    if value.postal_code is not None:
        out["postalCode"] = value.postal_code
    if value.country is not None:
        out["country"] = value.country
    return out


def patient(
    patient_id: str,
    demographics: Demographics,
    *,
    mrn: str | None,
    mrn_system: str,
    version: int,
    last_updated: datetime,
) -> dict[str, Any]:
    """A FHIR R4 Patient from a registration's or an update's demographics."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id,
        "meta": meta(version, last_updated),
    }
    listed = identifiers(demographics.identifiers, mrn, mrn_system)
    if listed:
        resource["identifier"] = listed
    if demographics.name:
        resource["name"] = [human_name(n) for n in demographics.name]
    if demographics.telecom:
        resource["telecom"] = [contact_point(t) for t in demographics.telecom]
    resource["gender"] = demographics.sex
    resource["birthDate"] = demographics.birth_date.isoformat()
    if demographics.address:
        resource["address"] = [address(a) for a in demographics.address]
    return resource


# -- AllergyIntolerance --------------------------------------------------------
def reaction(value: Reaction) -> dict[str, Any]:
    return compact(
        {
            "manifestation": [codeable_concept(m) for m in value.manifestation],
            "description": value.description,
            "severity": value.severity,
        }
    )


def allergy(event: AllergyRecordedV1, *, version: int, last_updated: datetime) -> dict[str, Any]:
    """A FHIR R4 AllergyIntolerance from its recording."""
    return compact(
        {
            "resourceType": "AllergyIntolerance",
            "id": event.allergy_id,
            "meta": meta(version, last_updated),
            "clinicalStatus": status(CLINICAL_STATUS_SYSTEM, event.clinical_status),
            "verificationStatus": status(VERIFICATION_STATUS_SYSTEM, event.verification_status),
            "type": event.type,
            "category": list(event.category),
            "criticality": event.criticality,
            "code": codeable_concept(event.code),
            "patient": {"reference": f"Patient/{event.patient_id}"},
            "recordedDate": instant(event.recorded_at),
            "recorder": (
                {"reference": f"Practitioner/{event.recorder_id}"} if event.recorder_id else None
            ),
            "reaction": [reaction(r) for r in event.reactions],
            "note": [{"text": event.note}] if event.note else None,
        }
    )


def refuted_stub(allergy_id: str, patient_id: str) -> dict[str, Any]:
    """What is known of an allergy whose refutation arrived before its recording."""
    return {
        "resourceType": "AllergyIntolerance",
        "id": allergy_id,
        "patient": {"reference": f"Patient/{patient_id}"},
    }


def refute(resource: dict[str, Any], *, reason: str | None, refuted_at: datetime) -> dict[str, Any]:
    """The allergy marked refuted; the reason, if any, becomes a note."""
    out = dict(resource)
    out["verificationStatus"] = status(VERIFICATION_STATUS_SYSTEM, "refuted")
    out["clinicalStatus"] = status(CLINICAL_STATUS_SYSTEM, REFUTED_CLINICAL_STATUS)
    if reason:
        note = {"time": instant(refuted_at), "text": reason}
        if note not in out.get("note", []):
            out["note"] = [*out.get("note", []), note]
    return _ordered(out)


def is_refuted(resource: dict[str, Any]) -> bool:
    codings = resource.get("verificationStatus", {}).get("coding", [])
    return any(
        c.get("system") == VERIFICATION_STATUS_SYSTEM and c.get("code") == "refuted"
        for c in codings
    )


_ALLERGY_ORDER = (
    "resourceType",
    "id",
    "meta",
    "clinicalStatus",
    "verificationStatus",
    "type",
    "category",
    "criticality",
    "code",
    "patient",
    "recordedDate",
    "recorder",
    "reaction",
    "note",
)


def _ordered(resource: dict[str, Any]) -> dict[str, Any]:
    rank = {k: i for i, k in enumerate(_ALLERGY_ORDER)}
    return dict(sorted(resource.items(), key=lambda kv: rank.get(kv[0], len(rank))))
