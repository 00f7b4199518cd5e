"""Token-signing keys and the key ring that says which one signs and which are published.

A :class:`SigningKey` holds its private key (PEM) in its ``Activated`` event; the
event store encrypts payloads at rest, and the relay never publishes that field.
The :class:`KeyRing` is a single aggregate: rotating writes to it, so two
concurrent rotations conflict on its version instead of both succeeding.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from .errors import KeyAlreadyRetired
from .rules import KEY_ALGORITHM, still_published

KEY_NAMESPACE = UUID("9e4a7c21-3f58-4b0d-a6e2-7c1d8b5f3a90")

Actor = dict[str, str]
PublicJwk = dict[str, str]


class SigningKey(Aggregate):
    """One ES256 key pair, active from creation until retired."""

    class Activated(Aggregate.Created):
        kid: str
        algorithm: str
        private_key_pem: str
        public_jwk: PublicJwk
        activated_at: datetime
        actor: Actor | None

    class Retired(Aggregate.Event):
        kid: str
        retired_at: datetime
        actor: Actor | None

    @staticmethod
    def create_id(kid: str) -> UUID:
        return uuid5(KEY_NAMESPACE, f"key/{kid}")

    @classmethod
    def activate(
        cls,
        kid: str,
        private_key_pem: str,
        public_jwk: PublicJwk,
        activated_at: datetime,
        actor: Actor | None = None,
    ) -> SigningKey:
        if "d" in public_jwk:
            raise ValueError("a public JWK must not carry the private exponent")
        if public_jwk.get("kid") != kid:
            raise ValueError("the public JWK must name the key's kid")
        return cls(
            kid=kid,
            algorithm=KEY_ALGORITHM,
            private_key_pem=private_key_pem,
            public_jwk=public_jwk,
            activated_at=activated_at,
            actor=actor,
        )

    @event(Activated)
    def __init__(
        self,
        kid: str,
        algorithm: str,
        private_key_pem: str,
        public_jwk: PublicJwk,
        activated_at: datetime,
        actor: Actor | None = None,
    ) -> None:
        self.kid = kid
        self.algorithm = algorithm
        self.private_key_pem = private_key_pem
        self.public_jwk = dict(public_jwk)
        self.activated_at = activated_at
        self.retired_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.retired_at is None

    def retire(self, at: datetime, actor: Actor | None = None) -> None:
        if not self.active:
            raise KeyAlreadyRetired
        self._retire(self.kid, at, actor)

    @event(Retired)
    def _retire(self, kid: str, retired_at: datetime, actor: Actor | None) -> None:
        # the kid rides on the event so the relay can name the key without loading it
        self.retired_at = retired_at


class KeyRing(Aggregate):
    """The current signing key and the retired ones, with their public halves."""

    class Started(Aggregate.Created):
        key_id: UUID
        kid: str
        public_jwk: PublicJwk

    class Rotated(Aggregate.Event):
        key_id: UUID
        kid: str
        public_jwk: PublicJwk
        rotated_at: datetime

    @staticmethod
    def create_id() -> UUID:
        """There is one key ring: a second "first key" is refused by the store."""
        return uuid5(KEY_NAMESPACE, "key-ring")

    @classmethod
    def start(cls, first: SigningKey) -> KeyRing:
        return cls(key_id=first.id, kid=first.kid, public_jwk=first.public_jwk)

    @event(Started)
    def __init__(self, key_id: UUID, kid: str, public_jwk: PublicJwk) -> None:
        self.current: dict[str, Any] = {"key_id": key_id, "kid": kid, "jwk": dict(public_jwk)}
        self.retired: list[dict[str, Any]] = []

    @property
    def current_key_id(self) -> UUID:
        return self.current["key_id"]

    @property
    def current_kid(self) -> str:
        return self.current["kid"]

    def rotate(self, new_key: SigningKey, old_key: SigningKey, at: datetime) -> None:
        """``new_key`` signs from now on; ``old_key`` (the current one) must be retired."""
        if old_key.id != self.current_key_id or old_key.retired_at is None:
            raise ValueError("rotation must retire the current key")
        if new_key.retired_at is not None or new_key.id == old_key.id:
            raise ValueError("rotation needs a new, active key")
        self._rotate(new_key.id, new_key.kid, new_key.public_jwk, at)

    @event(Rotated)
    def _rotate(self, key_id: UUID, kid: str, public_jwk: PublicJwk, rotated_at: datetime) -> None:
        self.retired.append({**self.current, "retired_at": rotated_at})
        self.current = {"key_id": key_id, "kid": kid, "jwk": dict(public_jwk)}

    def published(self, now: datetime, grace: timedelta) -> list[PublicJwk]:
        """Public keys of the JWKS: the current one, then retired ones still in their grace.

        ``grace`` is the longest token lifetime plus leeway, so a token signed just
        before a rotation verifies until it expires, and no longer.
        """
        keys = [dict(self.current["jwk"])]
        for entry in reversed(self.retired):
            if still_published(entry["retired_at"], now, grace):
                keys.append(dict(entry["jwk"]))
        return keys
