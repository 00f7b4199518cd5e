"""Settings of the projections service (``EHR_*`` environment variables)."""

from __future__ import annotations

from ehr_events.config import ServiceSettings

#: The service name: its folder under ``var/`` and its PostgreSQL schema.
SERVICE = "projections"


class ProjectionsSettings(ServiceSettings):
    """Settings of the read side; the shared ones come from :class:`ServiceSettings`."""

    host: str = "127.0.0.1"
    port: int = 8003
    #: Longest a read may wait for the read model to reach a version (read-your-writes).
    max_wait_ms: int = 5000
    #: How often a waiting read looks at the read model again.
    wait_poll_ms: int = 50
    #: Identifier system of MRNs, when the registration does not name one.
    mrn_system: str = "urn:ehr:mrn"
