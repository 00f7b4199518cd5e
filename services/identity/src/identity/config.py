"""Settings of the identity service, read from ``EHR_*`` environment variables."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from ehr_events.config import DefaultSecretError, Profile, ServiceSettings

#: A token's lifetime may never exceed this many seconds.
MAX_TOKEN_TTL_SECONDS = 900


class IdentitySettings(ServiceSettings):
    """Settings of the identity service.

    Outside the development profile, ``seed_demo_users`` must be switched off
    explicitly (``EHR_SEED_DEMO_USERS=false``): demo accounts with a known
    password are refused there, like the default cipher key.
    """

    token_ttl_seconds: int = Field(default=900, gt=0, le=MAX_TOKEN_TTL_SECONDS)
    #: Kept on top of the TTL before a retired key leaves the JWKS (clock skew, verifier leeway).
    jwks_retired_key_leeway_seconds: int = Field(default=60, ge=0, le=3600)
    #: Create "Demo Clinic" and one demo user per staff role at start-up (development only).
    seed_demo_users: bool = True
    #: Peers whose ``X-Forwarded-For`` header is believed (addresses or networks).
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1"])

    #: Failed logins allowed per account and per client address in the sliding window.
    throttle_account_failures: int = Field(default=5, ge=1)
    throttle_address_failures: int = Field(default=20, ge=1)
    throttle_window_seconds: int = Field(default=300, ge=1)

    #: Argon2id cost; the defaults are argon2-cffi's (RFC 9106 low-memory profile).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_cost: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
    password_min_length: int = Field(default=12, ge=1)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError("trusted_proxies holds IP addresses or networks") from None
        return value

    @model_validator(mode="after")
    def _refuse_demo_users(self) -> IdentitySettings:
        check_demo_seeding(self)
        if self.argon2_memory_cost < 8 * self.argon2_parallelism:
            raise ValueError("argon2_memory_cost must be at least 8 KiB per lane of parallelism")
        return self

    def seeds_demo_users(self) -> bool:
        return Profile(self.profile) is Profile.development and self.seed_demo_users


def check_demo_seeding(settings: IdentitySettings) -> None:
    """Refuse demo accounts (password ``demo``) outside the development profile."""
    profile = Profile(settings.profile)
    if profile is not Profile.development and settings.seed_demo_users:
        raise DefaultSecretError(
            "EHR_SEED_DEMO_USERS must be false outside the development profile "
            f"(profile is {profile.value!r}): demo accounts have a known password"
        )
