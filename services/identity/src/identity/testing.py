"""Test helpers for the identity service (and for contract tests that need one): settings,
a clock to drive, stored events, a verifier fed with the JWKS.

Shipped in the package, like ``ehr_events.testing``, so any test tree can import it
whatever pytest import mode it runs under.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.domain import DomainEventProtocol

from ehr_events.security import Principal, TokenVerifier
from ehr_events.testing import settings_for_test
from identity.application import IdentityApplication
from identity.config import IdentitySettings

#: Cheap Argon2 cost, for tests only: production keeps argon2-cffi's defaults.
FAST_ARGON2: dict[str, int] = {
    "argon2_time_cost": 1,
    "argon2_memory_cost": 64,
    "argon2_parallelism": 1,
}
STRONG_PASSWORD = "correct horse battery staple"
IN_MEMORY = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


def identity_settings(var_dir: Path, **overrides: Any) -> IdentitySettings:
    """Test-profile settings: fresh cipher key, no demo users, fast hashing."""
    values: dict[str, Any] = {"seed_demo_users": False, **FAST_ARGON2}
    values.update(overrides)
    return settings_for_test(IdentitySettings, var_dir, **values)


def postgres_settings(var_dir: Path, url: str, suffix: str, **overrides: Any) -> IdentitySettings:
    return identity_settings(var_dir, database_url=url, db_schema=f"identity_{suffix}", **overrides)


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class Clock:
    """A wall clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def stored_events(
    app: IdentityApplication,
) -> Iterator[tuple[bytes, bytes, DomainEventProtocol[Any]]]:
    """Every notification as (raw stored bytes, decrypted and decompressed JSON, event)."""
    mapper = app.mapper
    for notification in app.recorder.select_notifications(start=None, limit=100_000):
        plain = notification.state
        if mapper.cipher:
            plain = mapper.cipher.decrypt(plain)
        if mapper.compressor:
            plain = mapper.compressor.decompress(plain)
        yield notification.state, plain, mapper.to_domain_event(notification)


def verify(verifier: TokenVerifier, token: str) -> Principal:
    return asyncio.run(verifier.verify(token))


def verifier_for(app: IdentityApplication) -> TokenVerifier:
    """The shared verifier, fed with the JWKS the service publishes."""
    settings = app.settings
    verifier = TokenVerifier(
        "http://127.0.0.1:9/unused", settings.token_issuer, settings.token_audience
    )
    verifier.set_jwks(app.jwks())
    verifier.cache_seconds = 10**9
    return verifier
