"""Settings shared by every service: profile, storage, broker, token trust.

Each service subclasses :class:`ServiceSettings` in its own ``config.py``.
Outside the development profile, default secrets are refused at start-up.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The development cipher key. Any other profile must configure its own.
DEV_CIPHER_KEY = "ZGV2ZWxvcG1lbnQtb25seS1jaXBoZXIta2V5LTAwMDE="


class Profile(StrEnum):
    """Where a process runs; only ``development`` accepts demo users and default secrets."""

    development = "development"
    test = "test"
    production = "production"


class DefaultSecretError(ValueError):
    """A default secret or a demo account was configured outside development."""


class ServiceSettings(BaseSettings):
    """Settings common to all services, read from ``EHR_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="EHR_", extra="ignore")

    profile: Profile = Profile.development
    #: Root for SQLite files and logs of the embedded default.
    var_dir: Path = Path("var")
    #: PostgreSQL URL (``postgresql://user:pass@host:port/db``); SQLite files when empty.
    database_url: str = ""
    #: AES-256 key (base64, 32 bytes) for PHI at rest in the event store.
    cipher_key: str = DEV_CIPHER_KEY
    kafka_bootstrap: str = "127.0.0.1:9092"
    #: Issuer and audience every access token must carry.
    token_issuer: str = "http://127.0.0.1:8000/auth"
    token_audience: str = "ehr"
    #: Where the identity service publishes its signing keys.
    jwks_url: str = "http://127.0.0.1:8001/auth/jwks"
    identity_url: str = "http://127.0.0.1:8001"
    records_url: str = "http://127.0.0.1:8002"
    projections_url: str = "http://127.0.0.1:8003"
    #: PostgreSQL schema of this service's tables; the service name when empty.
    db_schema: str = ""
    #: Connections of each PostgreSQL pool of a process: kept open, and opened beyond
    #: that for a burst. A process has one to three pools (README: sizing).
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    #: Largest request body accepted, in bytes.
    max_body_bytes: int = 1024 * 1024

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> ServiceSettings:
        if self.profile is not Profile.development and self.cipher_key == DEV_CIPHER_KEY:
            raise DefaultSecretError("EHR_CIPHER_KEY must be set outside the development profile")
        return self

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    def uses_postgres(self) -> bool:
        return bool(self.database_url)


def eventsourcing_env(settings: ServiceSettings, service: str) -> dict[str, str]:
    """The ``eventsourcing`` environment for ``service``'s own event store.

    SQLite file ``<var>/<service>/events.sqlite3`` by default; with a database URL,
    PostgreSQL with the service's own schema. Payloads are encrypted with AES-GCM,
    by the ``cryptography`` package (OpenSSL): 6 µs per event where the
    pycryptodome cipher took over 100 µs. Both write nonce, tag and ciphertext in
    the same layout, so either reads what the other wrote.
    """
    env: dict[str, str] = {
        "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
        "CIPHER_KEY": settings.cipher_key,
        "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor",
    }
    if settings.uses_postgres():
        parts = urlsplit(settings.database_url)
        create_schema(settings.database_url, schema_for(settings, service) or service)
        env.update(
            {
                # eventsourcing's PostgreSQL store, failing fast while the database is
                # away (see ehr_events.pgstore)
                "PERSISTENCE_MODULE": "ehr_events.pgstore:Factory",
                "POSTGRES_DBNAME": parts.path.lstrip("/"),
                "POSTGRES_HOST": parts.hostname or "127.0.0.1",
                "POSTGRES_PORT": str(parts.port or 5432),
                "POSTGRES_USER": unquote(parts.username or ""),
                "POSTGRES_PASSWORD": unquote(parts.password or ""),
                "POSTGRES_SCHEMA": schema_for(settings, service) or service,
                "POSTGRES_POOL_SIZE": str(settings.db_pool_size),
                "POSTGRES_MAX_OVERFLOW": str(settings.db_max_overflow),
                # also the longest wait for a pooled connection: a request that finds
                # the database away fails after this long (two waits for an update)
                "POSTGRES_CONNECT_TIMEOUT": "3",
                "POSTGRES_LOCK_TIMEOUT": "3",
                "POSTGRES_PRE_PING": "y",
            }
        )
    else:
        folder = settings.var_dir / service
        folder.mkdir(parents=True, exist_ok=True)
        env.update(
            {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(folder / "events.sqlite3"),
                # give up on a locked file before the gateway gives up on the service
                # (10 s): a writer may first queue 5 s for the pool's writer connection,
                # so a caller told 503 is sure its write did not happen
                "SQLITE_LOCK_TIMEOUT": "3",
            }
        )
    return env


def sqlalchemy_url(settings: ServiceSettings, service: str, name: str = "events") -> str:
    """SQLAlchemy URL of a database owned by ``service``.

    ``name="events"`` is the same database as the service's event store (the outbox
    relay keeps its position there); other names are separate SQLite files for read
    models. On PostgreSQL everything lives in the service's database and schema.
    """
    if settings.uses_postgres():
        url = settings.database_url
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        return url
    folder = settings.var_dir / service
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / (name + '.sqlite3')}"


def create_schema(database_url: str, schema: str) -> None:
    """Create a PostgreSQL schema if it does not exist (the event store needs it first)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(database_url, connect_timeout=5, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def schema_for(settings: ServiceSettings, service: str) -> str | None:
    """The PostgreSQL schema a service's tables live in (None on SQLite)."""
    if not settings.uses_postgres():
        return None
    return settings.db_schema or service


def env_flag(name: str, default: bool = False) -> bool:
    """Read a boolean environment variable."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "y", "on"}


def redact_url(url: str) -> dict[str, Any]:
    """Host and database of a URL, without credentials, for start-up logs."""
    parts = urlsplit(url)
    return {"host": parts.hostname, "port": parts.port, "database": parts.path.lstrip("/")}


def load_settings(settings_class: type[ServiceSettings], process: str) -> Any:
    """Settings from the environment, or exit 2 with the reasons only.

    pydantic's own error text would include the input values (the cipher key among
    them), so only the messages are printed.
    """
    import sys

    from pydantic import ValidationError

    try:
        return settings_class()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(p) for p in error.get("loc", ())) or "settings"
            print(f"{process}: refusing to start: {field}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
