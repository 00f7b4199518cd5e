"""The records domain: aggregates, their events and rules. No I/O here."""

from .allergy import AllergyIntolerance
from .concurrency import check_version
from .errors import (
    AllergyAlreadyRefuted,
    AllergyNotFound,
    Conflict,
    DuplicatePatient,
    InvalidAllergy,
    InvalidDemographics,
    InvalidRecord,
    NotFound,
    PatientNotFound,
    RecordsError,
    VersionConflict,
)
from .patient import PATIENT_NAMESPACE, Patient, patient_namespace
from .values import AllergyDetails, Demographics, check_allergy, check_demographics, normalise_mrn

__all__ = [
    "PATIENT_NAMESPACE",
    "patient_namespace",
    "AllergyAlreadyRefuted",
    "AllergyDetails",
    "AllergyIntolerance",
    "AllergyNotFound",
    "Conflict",
    "Demographics",
    "DuplicatePatient",
    "InvalidAllergy",
    "InvalidDemographics",
    "InvalidRecord",
    "NotFound",
    "Patient",
    "PatientNotFound",
    "RecordsError",
    "VersionConflict",
    "check_allergy",
    "check_demographics",
    "check_version",
    "normalise_mrn",
]
