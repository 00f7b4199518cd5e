"""Patient: FHIR R4 JSON to the records service's commands, and records' JSON back.

The records service keeps demographics (identifiers, names, birth date, sex,
telecom, addresses) and a medical record number. The MRN is the identifier whose
``type`` is coded ``MR`` (v2-0203), else the first identifier; other identifier
types are not stored. Elements the records service does not keep are refused
with 422 rather than dropped. ``id``, ``meta`` and ``text`` are server-managed
and ignored, so a resource read from the chart can be sent back as an update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.patient import Patient

from .parsing import (
    FULL_DATE,
    Errors,
    check_code,
    drop_empty,
    only,
    parse_json,
    record_meta,
    require,
    validate_resource,
)

MR_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"

IDENTIFIER_USES = frozenset({"usual", "official", "temp", "secondary", "old"})
NAME_USES = frozenset({"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"})
TELECOM_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})
TELECOM_USES = frozenset({"home", "work", "temp", "old", "mobile"})
ADDRESS_USES = frozenset({"home", "work", "temp", "old", "billing"})
SEXES = frozenset({"male", "female", "other", "unknown"})

SERVER_MANAGED = frozenset({"resourceType", "id", "meta", "text"})
PATIENT_ELEMENTS = SERVER_MANAGED | {
    "active",
    "identifier",
    "name",
    "birthDate",
    "gender",
    "telecom",
    "address",
}
IDENTIFIER_ELEMENTS = frozenset({"system", "value", "use", "type"})
NAME_ELEMENTS = frozenset({"family", "given", "use"})
TELECOM_ELEMENTS = frozenset({"system", "value", "use"})
ADDRESS_ELEMENTS = frozenset({"line", "city", "state", "postalCode", "country", "use"})


@dataclass(frozen=True)
class PatientWrite:
    """A Patient resource as the records service takes it."""

    mrn: str
    demographics: dict[str, Any]

    def registration(self) -> dict[str, Any]:
        """Body of ``POST /patients``."""
        return {"mrn": self.mrn, **self.demographics}

    def update(self, expected_version: int) -> dict[str, Any]:
        """Body of ``PUT /patients/{id}/demographics``."""
        return {"expected_version": expected_version, **self.demographics}


def parse_patient(body: bytes) -> PatientWrite:
    """The records command of a request body holding a FHIR Patient."""
    data = parse_json(body)
    if not isinstance(data, dict):
        errors = Errors()
        errors.add("Patient", "must be a JSON object", "structure")
        errors.raise_if_any(400)
    return patient_write(data)


def patient_write(resource: dict[str, Any]) -> PatientWrite:
    """Validate a FHIR Patient (400 structure, 422 what records cannot keep) and map it."""
    validate_resource(resource, "Patient", Patient)
    errors = Errors()
    only(resource, PATIENT_ELEMENTS, "Patient", errors)
    if resource.get("active") is False:
        errors.add("Patient.active", "inactive patients are not supported", "not-supported")

    identifiers: list[dict[str, Any]] = []
    mrn: str | None = None
    for i, identifier in enumerate(resource.get("identifier") or ()):
        path = f"Patient.identifier[{i}]"
        only(identifier, IDENTIFIER_ELEMENTS, path, errors)
        require(identifier, ("system", "value"), path, errors)
        check_code(identifier.get("use"), IDENTIFIER_USES, f"{path}.use", errors)
        if mrn is None and is_mrn(identifier):
            mrn = identifier.get("value")
        identifiers.append(
            {
                "system": identifier.get("system"),
                "value": identifier.get("value"),
                "use": identifier.get("use"),
            }
        )
    if not identifiers:
        errors.add(
            "Patient.identifier", "at least one identifier (the MRN) is required", "required"
        )
    elif mrn is None:
        mrn = identifiers[0]["value"]

    names: list[dict[str, Any]] = []
    for i, name in enumerate(resource.get("name") or ()):
        path = f"Patient.name[{i}]"
        only(name, NAME_ELEMENTS, path, errors)
        require(name, ("family",), path, errors)
        check_code(name.get("use"), NAME_USES, f"{path}.use", errors)
        names.append(
            {
                "family": name.get("family"),
                "given": list(name.get("given") or ()),
                "use": name.get("use"),
            }
        )
    if not names:
        errors.add("Patient.name", "at least one name is required", "required")

    birth_date = resource.get("birthDate")
    if birth_date is None:
        errors.add("Patient.birthDate", "is required", "required")
    elif not FULL_DATE.match(birth_date):
        errors.add("Patient.birthDate", "must be a full date (YYYY-MM-DD)", "value")

    sex = resource.get("gender") or "unknown"
    check_code(sex, SEXES, "Patient.gender", errors)

    telecom: list[dict[str, Any]] = []
    for i, contact in enumerate(resource.get("telecom") or ()):
        path = f"Patient.telecom[{i}]"
        only(contact, TELECOM_ELEMENTS, path, errors)
        require(contact, ("system", "value"), path, errors)
        check_code(contact.get("system"), TELECOM_SYSTEMS, f"{path}.system", errors)
        check_code(contact.get("use"), TELECOM_USES, f"{path}.use", errors)
        telecom.append(
            {
                "system": contact.get("system"),
                "value": contact.get("value"),
                "use": contact.get("use"),
            }
        )

    addresses: list[dict[str, Any]] = []
    for i, address in enumerate(resource.get("address") or ()):
        path = f"Patient.address[{i}]"
        only(address, ADDRESS_ELEMENTS, path, errors)
        check_code(address.get("use"), ADDRESS_USES, f"{path}.use", errors)
        addresses.append(
            {
                "line": list(address.get("line") or ()),
                "city": address.get("city"),
                "state": address.get("state"),
                "postal_code": address.get("postalCode"),
                "country": address.get("country"),
                "use": address.get("use"),
            }
        )

    errors.raise_if_any(422)
    assert mrn is not None
    return PatientWrite(
        mrn=mrn,
        demographics={
            "identifiers": identifiers,
            "name": names,
            "birth_date": birth_date,
            "sex": sex,
            "telecom": telecom,
            "address": addresses,
        },
    )


def is_mrn(identifier: dict[str, Any]) -> bool:
    codings = (identifier.get("type") or {}).get("coding") or ()
    return any(c.get("code") == "MR" and c.get("system") in (None, MR_SYSTEM) for c in codings)


def patient_resource(record: dict[str, Any]) -> dict[str, Any]:
    """A FHIR Patient from the records service's ``GET /patients/{id}`` JSON.

    Used only when the chart has not caught up with a write the records service
    already holds; the chart's own rendering is preferred everywhere.
    """
    mrn = record.get("mrn")
    identifiers: list[dict[str, Any]] = []
    mrn_marked = False
    for identifier in record.get("identifiers") or ():
        out: dict[str, Any] = {}
        if identifier.get("use"):
            out["use"] = identifier["use"]
        if not mrn_marked and identifier.get("value") == mrn:
            out["type"] = {"coding": [{"system": MR_SYSTEM, "code": "MR"}]}
            mrn_marked = True
        out["system"] = identifier.get("system")
        out["value"] = identifier.get("value")
        identifiers.append(out)
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(record["id"]),
        "meta": record_meta(record),
        "identifier": identifiers,
        "name": [
            drop_empty({"use": n.get("use"), "family": n.get("family"), "given": n.get("given")})
            for n in record.get("name") or ()
        ],
        "telecom": [
            drop_empty({"system": t.get("system"), "value": t.get("value"), "use": t.get("use")})
            for t in record.get("telecom") or ()
        ],
        "gender": record.get("sex"),
        "birthDate": record.get("birth_date"),
        "address": [
            drop_empty(
                {
                    "use": a.get("use"),
                    "line": a.get("line"),
                    "city": a.get("city"),
                    "state": a.get("state"),
                    "postalCode": a.get("postal_code"),
                    "country": a.get("country"),
                }
            )
            for a in record.get("address") or ()
        ],
    }
    return drop_empty(resource)
