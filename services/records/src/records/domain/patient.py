"""The patient: a natural key (the MRN) and the current demographics."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from .concurrency import check_version
from .values import Demographics, check_demographics, normalise_mrn

#: Base namespace of patient ids. Deployments derive their own from a secret key
#: (see :func:`patient_namespace`), so an id cannot be turned back into its MRN by
#: hashing candidate MRNs. Never change a deployment's key: MRNs would stop colliding.
PATIENT_NAMESPACE = UUID("0b6f5c0e-58a4-4b4e-9b0c-5d1f0a7e2c31")


def patient_namespace(secret_key: str) -> UUID:
    """The namespace of patient ids for a deployment's secret key."""
    return uuid5(PATIENT_NAMESPACE, secret_key)


class Patient(Aggregate):
    """A registered patient. Demographics are replaced as a whole, never patched."""

    class Registered(Aggregate.Created):
        mrn: str
        demographics: dict[str, Any]
        actor: dict[str, str]

    class DemographicsUpdated(Aggregate.Event):
        demographics: dict[str, Any]
        actor: dict[str, str]

    @staticmethod
    def create_id(mrn: str, namespace: UUID = PATIENT_NAMESPACE) -> UUID:
        """The patient id of an MRN: the same MRN always gives the same id."""
        return uuid5(namespace, normalise_mrn(mrn))

    @classmethod
    def register(
        cls,
        mrn: str,
        demographics: Demographics | Mapping[str, Any],
        actor: Mapping[str, str],
        *,
        namespace: UUID = PATIENT_NAMESPACE,
        today: date | None = None,
    ) -> Patient:
        """A new patient, once the MRN and the demographics pass the rules."""
        key = normalise_mrn(mrn)
        checked = check_demographics(demographics, today=today)
        return cls._create(
            cls.Registered,
            id=cls.create_id(key, namespace),
            mrn=key,
            demographics=checked.model_dump(mode="json"),
            actor=dict(actor),
        )

    @event(Registered)
    def __init__(self, mrn: str, demographics: dict[str, Any], actor: dict[str, str]) -> None:
        self.mrn = mrn
        self._demographics = demographics

    @property
    def demographics(self) -> Demographics:
        return Demographics.model_validate(self._demographics)

    def update_demographics(
        self,
        demographics: Demographics | Mapping[str, Any],
        actor: Mapping[str, str],
        *,
        expected_version: int | None,
        today: date | None = None,
    ) -> None:
        """Replace the demographics, if the caller saw the current version."""
        check_version(self, expected_version)
        checked = check_demographics(demographics, today=today)
        self._update_demographics(demographics=checked.model_dump(mode="json"), actor=dict(actor))

    @event(DemographicsUpdated)
    def _update_demographics(self, demographics: dict[str, Any], actor: dict[str, str]) -> None:
        self._demographics = demographics
