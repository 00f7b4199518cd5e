"""The user account: a username, an Argon2id hash, roles and an organisation."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from .errors import UserAlreadyDisabled
from .rules import check_password_hash, check_roles, check_username, normalise_username

USER_NAMESPACE = UUID("0b7c1f0e-6a5d-4d1e-9c3a-2f1d5e8a7b41")

Actor = dict[str, str]


class User(Aggregate):
    """A person or client who signs in. The password itself is never held, only its hash."""

    class Registered(Aggregate.Created):
        username: str
        password_hash: str
        roles: tuple[str, ...]
        organization_id: UUID | None
        actor: Actor | None

    class RolesChanged(Aggregate.Event):
        roles: tuple[str, ...]
        actor: Actor | None

    class Disabled(Aggregate.Event):
        actor: Actor | None

    class PasswordRehashed(Aggregate.Event):
        password_hash: str

    @staticmethod
    def create_id(username: str) -> UUID:
        """The username is the natural key, so a duplicate is refused by the store."""
        return uuid5(USER_NAMESPACE, normalise_username(username))

    @classmethod
    def register(
        cls,
        username: str,
        password_hash: str,
        roles: Iterable[str],
        organization_id: UUID | None = None,
        actor: Actor | None = None,
    ) -> User:
        """A new account, after checking the username, the roles and the hash."""
        check_password_hash(password_hash)
        return cls(
            username=check_username(username),
            password_hash=password_hash,
            roles=check_roles(roles),
            organization_id=organization_id,
            actor=actor,
        )

    @event(Registered)
    def __init__(
        self,
        username: str,
        password_hash: str,
        roles: tuple[str, ...],
        organization_id: UUID | None,
        actor: Actor | None = None,
    ) -> None:
        self.username = username
        self.password_hash = password_hash
        self.roles = tuple(roles)
        self.organization_id = organization_id
        self.disabled = False

    def change_roles(self, roles: Iterable[str], actor: Actor | None = None) -> None:
        chosen = check_roles(roles)
        if chosen != self.roles:
            self._change_roles(chosen, actor)

    @event(RolesChanged)
    def _change_roles(self, roles: tuple[str, ...], actor: Actor | None) -> None:
        self.roles = tuple(roles)

    def disable(self, actor: Actor | None = None) -> None:
        if self.disabled:
            raise UserAlreadyDisabled
        self._disable(actor)

    @event(Disabled)
    def _disable(self, actor: Actor | None) -> None:
        self.disabled = True

    def rehash_password(self, password_hash: str) -> None:
        """Store the same password under the current Argon2 parameters."""
        check_password_hash(password_hash)
        self._rehash_password(password_hash)

    @event(PasswordRehashed)
    def _rehash_password(self, password_hash: str) -> None:
        self.password_hash = password_hash
