"""Login attempts: one small aggregate per attempt.

Why one aggregate per attempt rather than a per-user log of attempts: an attempt
is a single fact that is never changed afterwards, so each one is a one-event
stream written without reading anything first. Concurrent logins to the same
account then never conflict on a version (a per-user aggregate would serialise
them, and a brute-force burst would turn into 409s and retries), streams stay
short, and attempts for usernames that do not exist need no aggregate to hang
on. Throttling does not need this state: it is an in-memory sliding window.
The password is never part of these events.
"""

from __future__ import annotations

from typing import Literal, get_args
from uuid import UUID

from eventsourcing.domain import Aggregate

from .rules import username_for_log

FailureReason = Literal["unknown-user", "bad-password", "disabled", "throttled"]
FAILURE_REASONS: frozenset[str] = frozenset(get_args(FailureReason))


class LoginAttempt(Aggregate):
    """One password grant, refused or accepted."""

    class Failed(Aggregate.Created):
        username: str
        user_id: UUID | None
        reason: str
        client_address: str | None

    class Succeeded(Aggregate.Created):
        username: str
        user_id: UUID
        token_id: str
        client_address: str | None

    def __init__(
        self,
        username: str,
        user_id: UUID | None,
        client_address: str | None,
        reason: str | None = None,
        token_id: str | None = None,
    ) -> None:
        self.username = username
        self.user_id = user_id
        self.client_address = client_address
        self.reason = reason
        self.token_id = token_id

    @property
    def succeeded(self) -> bool:
        return self.token_id is not None

    @classmethod
    def fail(
        cls,
        username: str,
        reason: FailureReason,
        *,
        user_id: UUID | None = None,
        client_address: str | None = None,
    ) -> LoginAttempt:
        if reason not in FAILURE_REASONS:
            raise ValueError("unknown login failure reason")
        return cls._create(
            cls.Failed,
            username=username_for_log(username),
            user_id=user_id,
            reason=reason,
            client_address=client_address,
        )

    @classmethod
    def succeed(
        cls,
        username: str,
        user_id: UUID,
        token_id: str,
        *,
        client_address: str | None = None,
    ) -> LoginAttempt:
        return cls._create(
            cls.Succeeded,
            username=username_for_log(username),
            user_id=user_id,
            token_id=token_id,
            client_address=client_address,
        )
