"""Value shapes of patients and allergies, and the rules they must satisfy.

The shapes are those of the records catalogue (FHIR-like identifiers, names,
contact points, addresses, codeable concepts), so what the domain accepts is
exactly what the integration events can carry. Events store them as JSON data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ehr_events.catalogue.records import (
    Address,
    CodeableConcept,
    Coding,
    ContactPoint,
    Demographics,
    HumanName,
    Identifier,
    Reaction,
)

from .errors import InvalidAllergy, InvalidDemographics

__all__ = [
    "Address",
    "AllergyDetails",
    "CodeableConcept",
    "Coding",
    "ContactPoint",
    "Demographics",
    "HumanName",
    "Identifier",
    "Reaction",
    "check_allergy",
    "check_demographics",
    "latest_birth_date",
    "normalise_mrn",
]

EARLIEST_BIRTH_DATE = date(1900, 1, 1)
MRN_MAX_LENGTH = 64
_MRN = re.compile(r"[A-Z0-9][A-Z0-9._/-]*")

Sex = Literal["male", "female", "other", "unknown"]
ClinicalStatus = Literal["active", "inactive", "resolved"]
#: A recorded allergy is unconfirmed, presumed or confirmed; "refuted" comes by refuting it.
RecordedVerificationStatus = Literal["unconfirmed", "presumed", "confirmed"]
AllergyType = Literal["allergy", "intolerance"]
Category = Literal["food", "medication", "environment", "biologic"]
Criticality = Literal["low", "high", "unable-to-assess"]


class AllergyDetails(BaseModel):
    """What a clinician records about an allergy or intolerance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: CodeableConcept
    clinical_status: ClinicalStatus = "active"
    verification_status: RecordedVerificationStatus = "confirmed"
    type: AllergyType | None = None
    category: tuple[Category, ...] = ()
    criticality: Criticality | None = None
    reactions: tuple[Reaction, ...] = ()
    note: str | None = Field(default=None, max_length=5000)


def normalise_mrn(mrn: Any) -> str:
    """The MRN as the natural key: trimmed, upper case, letters, digits and ``._/-``."""
    if not isinstance(mrn, str):
        raise InvalidDemographics(["mrn"], "not a string")
    value = mrn.strip().upper()
    if len(value) > MRN_MAX_LENGTH or not _MRN.fullmatch(value):
        raise InvalidDemographics(
            ["mrn"], f"1 to {MRN_MAX_LENGTH} letters, digits, '.', '_', '/' or '-'"
        )
    return value


def latest_birth_date() -> date:
    """Today's date where it is latest on Earth (UTC+14), so no time zone is refused."""
    return (datetime.now(UTC) + timedelta(hours=14)).date()


def check_demographics(
    data: Demographics | Mapping[str, Any], *, today: date | None = None
) -> Demographics:
    """Validated demographics, or :class:`InvalidDemographics` naming the fields."""
    try:
        demographics = Demographics.model_validate(data)
    except ValidationError as exc:
        raise InvalidDemographics(_fields(exc)) from None
    today = today or latest_birth_date()
    if demographics.birth_date > today:
        raise InvalidDemographics(["birth_date"], "in the future")
    if demographics.birth_date < EARLIEST_BIRTH_DATE:
        raise InvalidDemographics(["birth_date"], "before 1900")
    blank = [
        f"identifiers.{i}"
        for i, identifier in enumerate(demographics.identifiers)
        if not identifier.system.strip() or not identifier.value.strip()
    ]
    blank += [
        f"name.{i}.family" for i, name in enumerate(demographics.name) if not name.family.strip()
    ]
    if blank:
        raise InvalidDemographics(blank, "blank")
    return demographics


def check_allergy(data: AllergyDetails | Mapping[str, Any]) -> AllergyDetails:
    """Validated allergy details, or :class:`InvalidAllergy` naming the fields."""
    try:
        details = AllergyDetails.model_validate(data)
    except ValidationError as exc:
        raise InvalidAllergy(_fields(exc)) from None
    if not _names_something(details.code):
        raise InvalidAllergy(["code"], "needs a text or a coding with a code")
    empty = [
        f"reactions.{i}.manifestation.{j}"
        for i, reaction in enumerate(details.reactions)
        for j, concept in enumerate(reaction.manifestation)
        if not _names_something(concept)
    ]
    if empty:
        raise InvalidAllergy(empty, "needs a text or a coding with a code")
    return details


def _names_something(concept: CodeableConcept) -> bool:
    return bool((concept.text or "").strip()) or any(
        (coding.code or "").strip() for coding in concept.coding
    )


def _fields(exc: ValidationError) -> list[str]:
    # the locations only: pydantic's messages and inputs may carry the submitted values
    return [".".join(str(part) for part in error["loc"]) or "body" for error in exc.errors()]
