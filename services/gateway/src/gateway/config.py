"""Settings of the gateway, read from ``EHR_*`` environment variables."""

from __future__ import annotations

from pydantic import model_validator

from ehr_events.config import DefaultSecretError, Profile, ServiceSettings

#: The development key of the paging tokens. Any other profile must configure its own.
DEV_PAGING_KEY = "development-only-paging-key-0001"


class GatewaySettings(ServiceSettings):
    """The shared service settings plus the edge's own: base URL, paging, rate limits."""

    #: Public base of the FHIR facade, used in ``Location``, ``fullUrl`` and paging links.
    fhir_base_url: str = "http://127.0.0.1:8000/fhir"
    #: Secret that encrypts search paging tokens (links carry no search terms).
    paging_key: str = DEV_PAGING_KEY
    paging_ttl_seconds: int = 3600
    #: Token buckets: sustained requests per second and burst, per caller and per address.
    rate_per_subject: float = 100.0
    burst_per_subject: int = 200
    rate_per_address: float = 300.0
    burst_per_address: int = 600
    #: Time limit of one call to an upstream service.
    upstream_timeout_seconds: float = 10.0
    #: Connections to the services, all of them together: a request beyond it waits
    #: for a free one (up to 2 s, then 503), so a flood queues at the edge instead of
    #: piling onto the services.
    upstream_connections: int = 64
    #: How long a read waits for the chart to reach a version the write side knows.
    read_your_writes_wait_ms: int = 2000

    @model_validator(mode="after")
    def _refuse_default_paging_key(self) -> GatewaySettings:
        if self.profile is not Profile.development and self.paging_key == DEV_PAGING_KEY:
            raise DefaultSecretError("EHR_PAGING_KEY must be set outside the development profile")
        return self

    @property
    def fhir_base(self) -> str:
        return self.fhir_base_url.rstrip("/")
