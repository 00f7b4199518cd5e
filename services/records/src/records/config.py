"""Settings of the records service (``EHR_*`` environment variables)."""

from __future__ import annotations

from ehr_events.config import ServiceSettings

#: The service's name: its event store, its schema, its relay source and topic.
SERVICE = "records"


class RecordsSettings(ServiceSettings):
    """Settings of the records service; the shared ones are documented on the base."""

    #: Notifications the outbox relay moves per batch, and its idle poll interval.
    relay_batch_size: int = 500
    relay_poll_seconds: float = 0.05
