"""Builders of catalogue events in their envelopes, with deterministic ids and times."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from ehr_events.catalogue import IntegrationEvent
from ehr_events.catalogue.gateway import AccessDecidedV1
from ehr_events.catalogue.identity import LoginFailedV1, UserRegisteredV1
from ehr_events.catalogue.records import (
    AllergyRecordedV1,
    AllergyRefutedV1,
    PatientDemographicsUpdatedV1,
    PatientRegisteredV1,
)
from ehr_events.envelope import Envelope
from ehr_events.outbox import event_id

Item = tuple[Envelope, IntegrationEvent]

#: Every event of a builder happens some minutes after this, by aggregate version.
BASE_TIME = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
HOSPITAL_MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"
NATIONAL_ID_SYSTEM = "urn:oid:2.16.840.1.113883.4.1"


def envelope(
    event: IntegrationEvent,
    *,
    subject: str,
    version: int,
    source: str | None = None,
    at: datetime | None = None,
    actor: str | None = "user-physician",
    role: str | None = "physician",
    organization: str | None = "org-1",
) -> Item:
    """The envelope the relay of ``source`` would give ``event``, and the event."""
    source = source or event.type_context()
    data = event.model_dump(mode="json")
    patient_id = data.get("patient_id")
    return (
        Envelope(
            id=event_id(source, subject, version),
            source=source,
            type=event.event_type,
            subject=subject,
            time=at or BASE_TIME + timedelta(minutes=version),
            aggregateversion=version,
            patientid=str(patient_id) if patient_id else None,
            actor=actor,
            actorrole=role,
            organization=organization,
            data=data,
        ),
        event,
    )


def demographics(
    *,
    family: str = "Müller",
    given: tuple[str, ...] = ("Anna", "Maria"),
    birth_date: date = date(1980, 2, 29),
    sex: str = "female",
    mrn: str | None = None,
    identifiers: list[dict[str, Any]] | None = None,
    names: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    listed = identifiers or [{"system": NATIONAL_ID_SYSTEM, "value": "123-45-6789"}]
    if mrn is not None:
        listed = [{"system": HOSPITAL_MRN_SYSTEM, "value": mrn, "use": "usual"}, *listed]
    return {
        "identifiers": listed,
        "name": names or [{"family": family, "given": list(given), "use": "official"}],
        "birth_date": birth_date.isoformat(),
        "sex": sex,
        "telecom": [{"system": "phone", "value": "+41 44 000 00 00", "use": "home"}],
        "address": [
            {
                "line": ["Bahnhofstrasse 1"],
                "city": "Zürich",
                "postal_code": "8001",
                "country": "CH",
                "use": "home",
            }
        ],
    }


def patient_registered(
    patient_id: str, *, mrn: str = "MRN-0001", version: int = 1, **kw: Any
) -> Item:
    at = kw.pop("at", None)
    # the records service lists the MRN among the identifiers, with its system
    listed = mrn if kw.pop("list_mrn", True) else None
    event = PatientRegisteredV1(
        patient_id=patient_id, mrn=mrn, demographics=demographics(mrn=listed, **kw)
    )
    return envelope(event, subject=patient_id, version=version, at=at)


def demographics_updated(
    patient_id: str, *, version: int, mrn: str | None = "MRN-0001", **kw: Any
) -> Item:
    at = kw.pop("at", None)
    event = PatientDemographicsUpdatedV1(
        patient_id=patient_id, demographics=demographics(mrn=mrn, **kw)
    )
    return envelope(event, subject=patient_id, version=version, at=at)


def allergy_recorded(allergy_id: str, patient_id: str, *, version: int = 1, **kw: Any) -> Item:
    at = kw.pop("at", None)
    data: dict[str, Any] = {
        "allergy_id": allergy_id,
        "patient_id": patient_id,
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
                                "code": "247472004",
                                "display": "Hives",
                            }
                        ]
                    }
                ],
                "severity": "moderate",
            }
        ],
        "note": "Reported by the patient.",
        "recorded_at": (BASE_TIME + timedelta(minutes=version)).isoformat(),
        "recorder_id": "practitioner-1",
    }
    data.update(kw)
    return envelope(
        AllergyRecordedV1.model_validate(data), subject=allergy_id, version=version, at=at
    )


def allergy_refuted(
    allergy_id: str,
    patient_id: str,
    *,
    version: int = 2,
    reason: str | None = "Tolerated.",
    at: datetime | None = None,
) -> Item:
    event = AllergyRefutedV1(
        allergy_id=allergy_id,
        patient_id=patient_id,
        reason=reason,
        refuted_at=BASE_TIME + timedelta(minutes=version),
    )
    return envelope(event, subject=allergy_id, version=version, at=at)


def user_registered(user_id: str, *, username: str = "dr.jane.doe") -> Item:
    event = UserRegisteredV1(
        user_id=user_id, username=username, roles=("physician",), organization_id="org-1"
    )
    return envelope(event, subject=user_id, version=1, actor="user-admin", role="admin")


def login_failed(username: str = "dr.jane.doe", *, subject: str = "login-1") -> Item:
    event = LoginFailedV1(username=username, reason="bad-password", client_address="10.0.0.7")
    return envelope(event, subject=subject, version=1, actor=None, role=None, organization=None)


def access_decided(
    decision_id: str,
    *,
    patient_id: str | None,
    user_id: str = "user-physician",
    outcome: str = "allowed",
    action: str = "read",
    route: str = "/fhir/Patient/{id}",
    at: datetime | None = None,
) -> Item:
    decided_at = at or BASE_TIME + timedelta(minutes=30)
    event = AccessDecidedV1(
        decision_id=decision_id,
        user_id=user_id,
        roles=("physician",),
        organization_id="org-1",
        patient_id=patient_id,
        method="GET",
        route=route,
        action=action,  # type: ignore[arg-type]
        outcome=outcome,  # type: ignore[arg-type]
        status=200 if outcome == "allowed" else 403,
        reason=None if outcome == "allowed" else "role not permitted",
        client_address="10.0.0.8",
        decided_at=decided_at,
    )
    return envelope(
        event,
        subject=decision_id,
        version=1,
        at=decided_at,
        actor=user_id,
        role="physician",
    )
