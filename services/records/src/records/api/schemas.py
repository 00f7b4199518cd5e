"""Request and response bodies, in families per resource.

Requests refuse unknown fields (422 naming them). Values use the shapes of the
records catalogue, so the API accepts what the integration events can carry.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ehr_events.catalogue.records import (
    Address,
    CodeableConcept,
    ContactPoint,
    HumanName,
    Identifier,
    Reaction,
)

from ..application import Saved
from ..domain import AllergyIntolerance, Patient
from ..domain.allergy import REASON_MAX_LENGTH
from ..domain.values import (
    MRN_MAX_LENGTH,
    AllergyType,
    Category,
    ClinicalStatus,
    Criticality,
    RecordedVerificationStatus,
    Sex,
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# patients


class DemographicsFields(_Request):
    identifiers: list[Identifier] = Field(min_length=1)
    name: list[HumanName] = Field(min_length=1)
    birth_date: date
    sex: Sex
    telecom: list[ContactPoint] = Field(default_factory=list)
    address: list[Address] = Field(default_factory=list)

    @field_validator("birth_date", mode="before")
    @classmethod
    def _iso_date_only(cls, value: object) -> object:
        # pydantic would read a number as seconds since 1970: a birth date is YYYY-MM-DD
        if not isinstance(value, str | date):
            raise ValueError("Input should be a date in YYYY-MM-DD form")
        return value

    def demographics(self) -> dict[str, object]:
        return self.model_dump(include=set(DemographicsFields.model_fields))


class PatientCreate(DemographicsFields):
    mrn: str = Field(min_length=1, max_length=MRN_MAX_LENGTH)


class DemographicsUpdate(DemographicsFields):
    expected_version: int = Field(ge=1, strict=True)


class PatientPublic(BaseModel):
    id: UUID
    version: int
    mrn: str
    identifiers: tuple[Identifier, ...]
    name: tuple[HumanName, ...]
    birth_date: date
    sex: Sex
    telecom: tuple[ContactPoint, ...]
    address: tuple[Address, ...]
    created_at: datetime
    modified_at: datetime

    @classmethod
    def of(cls, patient: Patient) -> PatientPublic:
        return cls.model_validate(_patient_fields(patient))


class PatientCreated(PatientPublic):
    position: int

    @classmethod
    def of_saved(cls, saved: Saved[Patient]) -> PatientCreated:
        return cls.model_validate({**_patient_fields(saved.record), "position": saved.position})


def _patient_fields(patient: Patient) -> dict[str, object]:
    demographics = patient.demographics
    return {
        "id": patient.id,
        "version": patient.version,
        "mrn": patient.mrn,
        "identifiers": demographics.identifiers,
        "name": demographics.name,
        "birth_date": demographics.birth_date,
        "sex": demographics.sex,
        "telecom": demographics.telecom,
        "address": demographics.address,
        "created_at": patient.created_on,
        "modified_at": patient.modified_on,
    }


# allergies


class AllergyCreate(_Request):
    code: CodeableConcept
    clinical_status: ClinicalStatus = "active"
    verification_status: RecordedVerificationStatus = "confirmed"
    type: AllergyType | None = None
    category: list[Category] = Field(default_factory=list)
    criticality: Criticality | None = None
    reactions: list[Reaction] = Field(default_factory=list)
    note: str | None = Field(default=None, max_length=5000)


class AllergyRefute(_Request):
    expected_version: int | None = Field(default=None, ge=1, strict=True)
    reason: str | None = Field(default=None, max_length=REASON_MAX_LENGTH)


class AllergyPublic(BaseModel):
    id: UUID
    patient_id: UUID
    version: int
    code: CodeableConcept
    clinical_status: ClinicalStatus
    verification_status: RecordedVerificationStatus | Literal["refuted"]
    type: AllergyType | None
    category: tuple[Category, ...]
    criticality: Criticality | None
    reactions: tuple[Reaction, ...]
    note: str | None
    recorded_at: datetime
    recorder_id: str | None
    refuted_reason: str | None
    refuted_at: datetime | None
    created_at: datetime
    modified_at: datetime

    @classmethod
    def of(cls, allergy: AllergyIntolerance) -> AllergyPublic:
        return cls.model_validate(
            {
                "id": allergy.id,
                "patient_id": allergy.patient_id,
                "version": allergy.version,
                "code": allergy.code,
                "clinical_status": allergy.clinical_status,
                "verification_status": allergy.verification_status,
                "type": allergy.type,
                "category": allergy.category,
                "criticality": allergy.criticality,
                "reactions": allergy.reactions,
                "note": allergy.note,
                "recorded_at": allergy.recorded_at,
                "recorder_id": allergy.recorder_id,
                "refuted_reason": allergy.refuted_reason,
                "refuted_at": allergy.refuted_at,
                "created_at": allergy.created_on,
                "modified_at": allergy.modified_on,
            }
        )


# commands


class CommandResult(BaseModel):
    """What a command changed: the record, its new version, the log position to wait for."""

    id: UUID
    version: int
    position: int

    @classmethod
    def of(cls, saved: Saved[Patient] | Saved[AllergyIntolerance]) -> CommandResult:
        return cls(id=saved.id, version=saved.version, position=saved.position)


class AllergyCreated(CommandResult):
    patient_id: UUID

    @classmethod
    def of_saved(cls, saved: Saved[AllergyIntolerance]) -> AllergyCreated:
        return cls(
            id=saved.id,
            version=saved.version,
            position=saved.position,
            patient_id=saved.record.patient_id,
        )
