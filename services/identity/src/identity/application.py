"""The identity service's command layer: users, organisations, keys and logins."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from ehr_events.config import eventsourcing_env
from ehr_events.db import make_engine

from .config import IdentitySettings
from .domain.errors import (
    ConcurrentChange,
    LoginRefused,
    LoginThrottled,
    NoSigningKey,
    OrganizationNameTaken,
    OrganizationNotFound,
    UnknownOrganization,
    UsernameTaken,
    UserNotFound,
)
from .domain.login import FailureReason, LoginAttempt
from .domain.organization import Organization
from .domain.rules import check_password, check_roles, check_username, normalise_username
from .domain.signing_key import KeyRing, SigningKey
from .domain.user import User
from .keys import generate_key, jwks_document, load_private_key
from .passwords import Passwords
from .throttle import LoginThrottle
from .tokens import ActiveKey, IssuedToken, issue_token

Clock = Callable[[], datetime]
Actor = dict[str, str]
TAggregate = TypeVar("TAggregate", bound=Aggregate)


def utc_now() -> datetime:
    return datetime.now(UTC)


class IdentityApplication(Application[UUID]):
    """Commands and queries of the identity service over its own event store.

    ``clock`` is the wall clock used for token times, key rotation and the JWKS
    grace period, and for the login throttle; tests inject one. ``env`` adds to
    (or overrides) the persistence environment, e.g. the in-memory store in tests.
    """

    name = "identity"

    def __init__(
        self,
        settings: IdentitySettings,
        *,
        clock: Clock = utc_now,
        env: Mapping[str, str] | None = None,
        passwords: Passwords | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        if settings.uses_postgres():
            # eventsourcing creates its tables, not the service's schema
            make_engine(settings, "identity").dispose()
        super().__init__(env={**eventsourcing_env(settings, "identity"), **(env or {})})
        self.passwords = passwords or Passwords.from_settings(settings)
        self.throttle = LoginThrottle.from_settings(settings, lambda: self.clock().timestamp())
        self._signing_keys: dict[UUID, ActiveKey] = {}

    # -- loading -------------------------------------------------------------------

    def _get(self, aggregate_id: UUID, kind: type[TAggregate]) -> TAggregate | None:
        try:
            aggregate: Aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, kind) else None

    def _save(self, *aggregates: Aggregate, conflict: Exception | None = None) -> None:
        try:
            self.save(*aggregates)
        except IntegrityError:
            raise (conflict or ConcurrentChange()) from None

    # -- organisations ---------------------------------------------------------------

    def register_organization(self, name: str, actor: Actor | None = None) -> Organization:
        organization = Organization.register(name, actor=actor)
        self._save(organization, conflict=OrganizationNameTaken())
        return organization

    def get_organization(self, organization_id: UUID) -> Organization:
        organization = self._get(organization_id, Organization)
        if organization is None:
            raise OrganizationNotFound
        return organization

    def find_organization(self, name: str) -> Organization | None:
        return self._get(Organization.create_id(name), Organization)

    def resolve_organization(self, reference: str) -> UUID:
        """The id of an organisation given by its id or by its name."""
        try:
            by_id = self._get(UUID(reference), Organization)
        except ValueError:
            by_id = None
        organization = by_id or self.find_organization(reference)
        if organization is None:
            raise UnknownOrganization
        return organization.id

    # -- users -----------------------------------------------------------------------

    def register_user(
        self,
        username: str,
        password: str,
        roles: Iterable[str],
        organization_id: UUID | None = None,
        *,
        actor: Actor | None = None,
        enforce_password_policy: bool = True,
    ) -> User:
        """Register an account. Demo seeding alone skips the password policy."""
        if enforce_password_policy:
            check_password(password, self.settings.password_min_length)
        if organization_id is not None and self._get(organization_id, Organization) is None:
            raise UnknownOrganization
        # the cheap rules first, before paying for a hash
        check_username(username)
        roles = check_roles(roles)
        user = User.register(
            username, self.passwords.hash(password), roles, organization_id, actor=actor
        )
        self._save(user, conflict=UsernameTaken())
        return user

    def get_user(self, user_id: UUID) -> User:
        user = self._get(user_id, User)
        if user is None:
            raise UserNotFound
        return user

    def find_user(self, username: str) -> User | None:
        return self._get(User.create_id(username), User)

    def change_user_roles(
        self, user_id: UUID, roles: Iterable[str], actor: Actor | None = None
    ) -> User:
        user = self.get_user(user_id)
        user.change_roles(roles, actor)
        self._save(user)
        return user

    def disable_user(self, user_id: UUID, actor: Actor | None = None) -> User:
        user = self.get_user(user_id)
        user.disable(actor)
        self._save(user)
        return user

    # -- signing keys ----------------------------------------------------------------

    def key_ring(self) -> KeyRing | None:
        return self._get(KeyRing.create_id(), KeyRing)

    def ensure_signing_key(self) -> str:
        """The current kid, generating the first key if there is none yet."""
        ring = self.key_ring()
        if ring is not None:
            return ring.current_kid
        material = generate_key()
        key = SigningKey.activate(
            material.kid, material.private_key_pem, material.public_jwk, self.clock()
        )
        ring = KeyRing.start(key)
        try:
            self.save(key, ring)
        except IntegrityError:
            # another process started the ring first: use its key
            ring = self.key_ring()
            if ring is None:
                raise
        return ring.current_kid

    def rotate_signing_key(self, actor: Actor | None = None) -> tuple[str, str]:
        """Activate a new key and retire the current one; returns (new kid, retired kid)."""
        ring = self.key_ring()
        if ring is None:
            self.ensure_signing_key()
            ring = self.key_ring()
            assert ring is not None
        old = self._get(ring.current_key_id, SigningKey)
        if old is None:
            raise NoSigningKey
        now = self.clock()
        material = generate_key()
        new = SigningKey.activate(
            material.kid, material.private_key_pem, material.public_jwk, now, actor=actor
        )
        old.retire(now, actor)
        ring.rotate(new, old, now)
        self._save(new, old, ring)
        return new.kid, old.kid

    def signing_key(self) -> ActiveKey:
        """The key that signs now (read each time, so a rotation elsewhere is seen)."""
        ring = self.key_ring()
        if ring is None:
            raise NoSigningKey
        cached = self._signing_keys.get(ring.current_key_id)
        if cached is None:
            key = self._get(ring.current_key_id, SigningKey)
            if key is None:
                raise NoSigningKey
            cached = ActiveKey(kid=key.kid, private_key=load_private_key(key.private_key_pem))
            self._signing_keys = {ring.current_key_id: cached}
        return cached

    def jwks_grace(self) -> timedelta:
        """How long a retired key stays published: a whole token lifetime plus leeway."""
        return timedelta(
            seconds=self.settings.token_ttl_seconds + self.settings.jwks_retired_key_leeway_seconds
        )

    def jwks(self) -> dict[str, Any]:
        """The public keys tokens may be verified with, now."""
        ring = self.key_ring()
        if ring is None:
            return {"keys": []}
        return jwks_document(ring.published(self.clock(), self.jwks_grace()))

    # -- logins ----------------------------------------------------------------------

    def login(self, username: str, password: str, client_address: str | None) -> IssuedToken:
        """The OAuth password grant: check, record the attempt, issue a token.

        Raises :class:`LoginThrottled` (without checking the password) or
        :class:`LoginRefused`; either way a ``LoginAttempt.Failed`` is recorded.
        """
        account = normalise_username(username)
        retry_after = self.throttle.retry_after(account, client_address)
        if retry_after is not None:
            known = self.find_user(username) if account else None
            self._record_failure(username, "throttled", known.id if known else None, client_address)
            raise LoginThrottled(retry_after)

        user = self.find_user(username) if account else None
        if user is None:
            self.passwords.verify_decoy(password)
            self._refuse(username, "unknown-user", None, client_address)
        if not self.passwords.verify(user.password_hash, password):
            self._refuse(username, "bad-password", user.id, client_address)
        if user.disabled:
            self._refuse(username, "disabled", user.id, client_address)

        token = issue_token(
            user,
            self.signing_key(),
            issuer=self.settings.token_issuer,
            audience=self.settings.token_audience,
            ttl_seconds=self.settings.token_ttl_seconds,
            now=self.clock(),
        )
        attempt = LoginAttempt.succeed(
            user.username, user.id, token.token_id, client_address=client_address
        )
        if self.passwords.needs_rehash(user.password_hash):
            user.rehash_password(self.passwords.hash(password))
            # if the account changed meanwhile, the rehash waits for the next login
            with suppress(IntegrityError):
                self.save(user)
        self.save(attempt)
        self.throttle.record_success(account)
        return token

    def _refuse(
        self, username: str, reason: FailureReason, user_id: UUID | None, address: str | None
    ) -> NoReturn:
        self.throttle.record_failure(normalise_username(username), address)
        self._record_failure(username, reason, user_id, address)
        raise LoginRefused(reason)

    def _record_failure(
        self, username: str, reason: FailureReason, user_id: UUID | None, address: str | None
    ) -> None:
        self.save(LoginAttempt.fail(username, reason, user_id=user_id, client_address=address))
