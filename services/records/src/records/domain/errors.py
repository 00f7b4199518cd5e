"""The records service's errors.

Messages name ids, versions and fields only: never a name, a birth date, an MRN
or any other value a caller submitted, since those may be PHI.
"""

from __future__ import annotations

from collections.abc import Iterable


class RecordsError(Exception):
    """Base of every error the records domain and application raise."""


class NotFound(RecordsError):
    """The addressed record does not exist."""


class PatientNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Patient not found.")


class AllergyNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Allergy not found.")


class Conflict(RecordsError):
    """The command contradicts the current state of a record."""


class DuplicatePatient(Conflict):
    def __init__(self) -> None:
        super().__init__("A patient with this MRN is already registered.")


class VersionConflict(Conflict):
    def __init__(self, expected: int | None, actual: int | None = None) -> None:
        self.expected = expected
        self.actual = actual
        if actual is None:
            message = "The record was changed by another request; reload it and retry."
        else:
            message = f"Expected version {expected}, but the record is at version {actual}."
        super().__init__(message)


class AllergyAlreadyRefuted(Conflict):
    def __init__(self) -> None:
        super().__init__("The allergy is already refuted.")


class InvalidRecord(RecordsError, ValueError):
    """Submitted data breaks a rule; ``fields`` names where, never what."""

    kind = "record"

    def __init__(self, fields: Iterable[str], reason: str = "") -> None:
        self.fields = tuple(sorted(set(fields)))
        self.reason = reason
        message = f"Invalid {self.kind}: {', '.join(self.fields) or 'body'}"
        super().__init__(f"{message} ({reason})." if reason else f"{message}.")


class InvalidDemographics(InvalidRecord):
    kind = "demographics"


class InvalidAllergy(InvalidRecord):
    kind = "allergy"
