"""Integration events of the records context (patients and allergies)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from . import IntegrationEvent, catalogue


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Identifier(_Part):
    system: str
    value: str
    use: Literal["usual", "official", "temp", "secondary", "old"] | None = None


class HumanName(_Part):
    family: str
    given: tuple[str, ...] = ()
    use: Literal["usual", "official", "temp", "nickname", "anonymous", "old", "maiden"] | None = (
        None
    )


class ContactPoint(_Part):
    system: Literal["phone", "fax", "email", "pager", "url", "sms", "other"]
    value: str
    use: Literal["home", "work", "temp", "old", "mobile"] | None = None


class Address(_Part):
    line: tuple[str, ...] = ()
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None
    use: Literal["home", "work", "temp", "old", "billing"] | None = None


class Demographics(_Part):
    """The whole of a patient's demographics, as carried by registration and updates."""

    identifiers: tuple[Identifier, ...] = Field(min_length=1)
    name: tuple[HumanName, ...] = Field(min_length=1)
    birth_date: date
    sex: Literal["male", "female", "other", "unknown"]
    telecom: tuple[ContactPoint, ...] = ()
    address: tuple[Address, ...] = ()


class Coding(_Part):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableConcept(_Part):
    coding: tuple[Coding, ...] = ()
    text: str | None = None


class Reaction(_Part):
    manifestation: tuple[CodeableConcept, ...] = Field(min_length=1)
    severity: Literal["mild", "moderate", "severe"] | None = None
    description: str | None = None


@catalogue.register
class PatientRegisteredV1(IntegrationEvent):
    event_type = "ehr.records.PatientRegistered.v1"

    patient_id: str
    mrn: str
    demographics: Demographics


@catalogue.register
class PatientDemographicsUpdatedV1(IntegrationEvent):
    event_type = "ehr.records.PatientDemographicsUpdated.v1"

    patient_id: str
    demographics: Demographics


@catalogue.register
class AllergyRecordedV1(IntegrationEvent):
    event_type = "ehr.records.AllergyRecorded.v1"

    allergy_id: str
    patient_id: str
    code: CodeableConcept
    clinical_status: Literal["active", "inactive", "resolved"] = "active"
    verification_status: Literal["unconfirmed", "presumed", "confirmed"] = "confirmed"
    type: Literal["allergy", "intolerance"] | None = None
    category: tuple[Literal["food", "medication", "environment", "biologic"], ...] = ()
    criticality: Literal["low", "high", "unable-to-assess"] | None = None
    reactions: tuple[Reaction, ...] = ()
    note: str | None = None
    recorded_at: datetime
    recorder_id: str | None = None


@catalogue.register
class AllergyRefutedV1(IntegrationEvent):
    event_type = "ehr.records.AllergyRefuted.v1"

    allergy_id: str
    patient_id: str
    reason: str | None = None
    refuted_at: datetime
