"""The records application: commands and queries on the service's event store.

Every command returns the aggregate id, its new version and the position of its
last event in the notification log, so a caller can wait for a read model to
catch up with its own write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import RecordConflictError

from ehr_events.config import eventsourcing_env
from ehr_events.db import make_engine

from .config import SERVICE, RecordsSettings
from .domain import (
    PATIENT_NAMESPACE,
    AllergyDetails,
    AllergyIntolerance,
    AllergyNotFound,
    Demographics,
    DuplicatePatient,
    NotFound,
    Patient,
    PatientNotFound,
    RecordsError,
    VersionConflict,
    patient_namespace,
)

log = logging.getLogger("records.application")

A = TypeVar("A", bound=Aggregate)


@dataclass(frozen=True)
class Saved(Generic[A]):
    """The outcome of a command: which aggregate, its version, its log position.

    ``record`` is the aggregate as saved, so a caller need not load it again.
    """

    id: UUID
    version: int
    position: int
    record: A = field(repr=False, compare=False)


class RecordsApplication(Application[UUID]):
    """Registers patients, keeps their demographics, records and refutes allergies."""

    name = SERVICE
    #: Namespace of patient ids (natural keys); from the settings' secret key.
    patient_namespace: UUID = PATIENT_NAMESPACE

    @classmethod
    def from_settings(cls, settings: RecordsSettings) -> RecordsApplication:
        """The application on the store the settings choose (SQLite or PostgreSQL)."""
        if settings.uses_postgres():
            # eventsourcing creates its tables, not the schema they live in
            make_engine(settings, SERVICE).dispose()
        app = cls(env=eventsourcing_env(settings, SERVICE))
        app.patient_namespace = patient_namespace(settings.patient_id_key)
        return app

    # patients

    def register_patient(
        self,
        mrn: str,
        demographics: Demographics | Mapping[str, Any],
        actor: Mapping[str, str],
        *,
        today: date | None = None,
    ) -> Saved[Patient]:
        patient = Patient.register(
            mrn, demographics, actor, namespace=self.patient_namespace, today=today
        )
        # a second registration of the MRN derives the same id: the store refuses it
        return self._save(patient, on_conflict=DuplicatePatient)

    def update_demographics(
        self,
        patient_id: UUID | str,
        expected_version: int,
        demographics: Demographics | Mapping[str, Any],
        actor: Mapping[str, str],
        *,
        today: date | None = None,
    ) -> Saved[Patient]:
        patient = self.get_patient(patient_id)
        patient.update_demographics(
            demographics, actor, expected_version=expected_version, today=today
        )
        return self._save(patient, on_conflict=lambda: VersionConflict(expected_version))

    def get_patient(self, patient_id: UUID | str) -> Patient:
        return self._get(patient_id, Patient, PatientNotFound)

    # allergies

    def record_allergy(
        self,
        patient_id: UUID | str,
        details: AllergyDetails | Mapping[str, Any],
        actor: Mapping[str, str],
        *,
        recorded_at: datetime | None = None,
    ) -> Saved[AllergyIntolerance]:
        patient = self.get_patient(patient_id)
        allergy = AllergyIntolerance.record(patient.id, details, actor, recorded_at=recorded_at)
        return self._save(allergy, on_conflict=lambda: VersionConflict(None))

    def refute_allergy(
        self,
        allergy_id: UUID | str,
        expected_version: int | None,
        reason: str | None,
        actor: Mapping[str, str],
    ) -> Saved[AllergyIntolerance]:
        allergy = self.get_allergy(allergy_id)
        allergy.refute(reason, actor, expected_version=expected_version)
        return self._save(allergy, on_conflict=lambda: VersionConflict(expected_version))

    def get_allergy(self, allergy_id: UUID | str) -> AllergyIntolerance:
        return self._get(allergy_id, AllergyIntolerance, AllergyNotFound)

    # plumbing

    def position(self) -> int:
        """The id of the last notification in the log (0 when it is empty)."""
        return self.recorder.max_notification_id() or 0

    def _get(self, aggregate_id: UUID | str, kind: type[A], missing: type[NotFound]) -> A:
        try:
            uid = aggregate_id if isinstance(aggregate_id, UUID) else UUID(str(aggregate_id))
        except ValueError:
            raise missing() from None
        try:
            aggregate: Aggregate = self.repository.get(uid)
        except AggregateNotFoundError:
            raise missing() from None
        if not isinstance(aggregate, kind):
            raise missing()
        return aggregate

    def _save(self, aggregate: A, *, on_conflict: Callable[[], RecordsError]) -> Saved[A]:
        try:
            recordings = self.save(aggregate)
        except RecordConflictError:
            # another writer saved this version first: refuse, never merge
            log.info("conflict saving %s %s", type(aggregate).__name__, aggregate.id)
            raise on_conflict() from None
        return Saved(aggregate.id, aggregate.version, recordings[-1].notification.id, aggregate)
