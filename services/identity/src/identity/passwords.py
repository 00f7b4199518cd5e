"""Argon2id password hashing (argon2-cffi). Passwords never leave this module hashed or not."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .config import IdentitySettings


class Passwords:
    """Hashes and checks passwords with the configured Argon2id cost."""

    def __init__(self, time_cost: int, memory_cost: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism
        )
        # checked against when the user does not exist, so timing does not tell
        self._decoy = self._hasher.hash(secrets.token_urlsafe(24))

    @classmethod
    def from_settings(cls, settings: IdentitySettings) -> Passwords:
        return cls(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
        )

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def verify_decoy(self, password: str) -> None:
        """Spend the time of one verification, for a username that does not exist."""
        self.verify(self._decoy, password)

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
