"""Settings of the records service (``EHR_*`` environment variables)."""

from __future__ import annotations

from pydantic import model_validator

from ehr_events.config import DefaultSecretError, Profile, ServiceSettings

#: The service's name: its event store, its schema, its relay source and topic.
SERVICE = "records"

#: The development key of patient ids; refused in any other profile.
DEV_PATIENT_ID_KEY = "development-only-patient-id-key"


class RecordsSettings(ServiceSettings):
    """Settings of the records service; the shared ones are documented on the base."""

    #: Notifications the outbox relay moves per batch, and how long it waits once it
    #: has caught up before it polls again (see ``ehr_events.outbox.OutboxRelay``).
    relay_batch_size: int = 500
    relay_poll_seconds: float = 0.05

    #: Secret key from which patient ids are derived (uuid5 of the MRN in a keyed
    #: namespace), so an id in a URL or a log does not reveal the MRN. Set once per
    #: deployment and never change it.
    patient_id_key: str = DEV_PATIENT_ID_KEY

    @model_validator(mode="after")
    def _refuse_default_id_key(self) -> RecordsSettings:
        if self.profile is not Profile.development and self.patient_id_key == DEV_PATIENT_ID_KEY:
            raise DefaultSecretError(
                "EHR_PATIENT_ID_KEY must be set outside the development profile"
            )
        return self
