"""An allergy or intolerance of a patient. Corrections are refutations, never edits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from .concurrency import check_version
from .errors import AllergyAlreadyRefuted, InvalidAllergy
from .values import AllergyDetails, CodeableConcept, Reaction, check_allergy

REASON_MAX_LENGTH = 1000


class AllergyIntolerance(Aggregate):
    """An allergy recorded for a patient (the application checks the patient exists)."""

    class Recorded(Aggregate.Created):
        patient_id: UUID
        code: dict[str, Any]
        clinical_status: str
        verification_status: str
        type: str | None
        category: list[str]
        criticality: str | None
        reactions: list[dict[str, Any]]
        note: str | None
        recorded_at: datetime
        recorder_id: str | None
        actor: dict[str, str]

    class Refuted(Aggregate.Event):
        # the patient travels with the event, so the relay can key it by patient
        patient_id: UUID
        reason: str | None
        refuted_at: datetime
        actor: dict[str, str]

    @classmethod
    def record(
        cls,
        patient_id: UUID,
        details: AllergyDetails | Mapping[str, Any],
        actor: Mapping[str, str],
        *,
        recorded_at: datetime | None = None,
    ) -> AllergyIntolerance:
        """A new allergy, once its details pass the rules."""
        checked = check_allergy(details)
        recorded_at = recorded_at or datetime.now(UTC)
        if recorded_at.tzinfo is None:
            raise InvalidAllergy(["recorded_at"], "needs a time zone")
        return cls(
            patient_id=patient_id,
            **checked.model_dump(mode="json"),
            recorded_at=recorded_at,
            recorder_id=actor.get("sub"),
            actor=dict(actor),
        )

    @event(Recorded)
    def __init__(
        self,
        patient_id: UUID,
        code: dict[str, Any],
        clinical_status: str,
        verification_status: str,
        type: str | None,
        category: list[str],
        criticality: str | None,
        reactions: list[dict[str, Any]],
        note: str | None,
        recorded_at: datetime,
        recorder_id: str | None,
        actor: dict[str, str],
    ) -> None:
        self.patient_id = patient_id
        self._code = code
        self.clinical_status = clinical_status
        self.verification_status = verification_status
        self.type = type
        self.category = category
        self.criticality = criticality
        self._reactions = reactions
        self.note = note
        self.recorded_at = recorded_at
        self.recorder_id = recorder_id
        self.refuted_reason: str | None = None
        self.refuted_at: datetime | None = None

    @property
    def code(self) -> CodeableConcept:
        return CodeableConcept.model_validate(self._code)

    @property
    def reactions(self) -> tuple[Reaction, ...]:
        return tuple(Reaction.model_validate(r) for r in self._reactions)

    @property
    def is_refuted(self) -> bool:
        return self.verification_status == "refuted"

    def refute(
        self,
        reason: str | None,
        actor: Mapping[str, str],
        *,
        expected_version: int | None = None,
        refuted_at: datetime | None = None,
    ) -> None:
        """Mark the allergy as refuted: it was recorded, but it is not so."""
        check_version(self, expected_version)
        if self.is_refuted:
            raise AllergyAlreadyRefuted()
        reason = (reason or "").strip() or None
        if reason is not None and len(reason) > REASON_MAX_LENGTH:
            raise InvalidAllergy(["reason"], f"longer than {REASON_MAX_LENGTH} characters")
        self._refute(
            patient_id=self.patient_id,
            reason=reason,
            refuted_at=refuted_at or datetime.now(UTC),
            actor=dict(actor),
        )

    @event(Refuted)
    def _refute(
        self, patient_id: UUID, reason: str | None, refuted_at: datetime, actor: dict[str, str]
    ) -> None:
        self.verification_status = "refuted"
        self.refuted_reason = reason
        self.refuted_at = refuted_at
