"""The identity service's errors. Messages are safe to show: they echo no input."""

from __future__ import annotations


class IdentityError(Exception):
    """Base of every error the identity domain and application raise."""


class InvalidInput(IdentityError):
    """A command carried a value the rules refuse (username, role, password, name)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidUsername(InvalidInput):
    def __init__(self, message: str) -> None:
        super().__init__(message, "username")


class InvalidRoles(InvalidInput):
    def __init__(self, message: str) -> None:
        super().__init__(message, "roles")


class WeakPassword(InvalidInput):
    def __init__(self, message: str) -> None:
        super().__init__(message, "password")


class InvalidOrganizationName(InvalidInput):
    def __init__(self, message: str) -> None:
        super().__init__(message, "name")


class UnknownOrganization(InvalidInput):
    def __init__(self) -> None:
        super().__init__("The organization does not exist.", "organization")


class NotFound(IdentityError):
    """The aggregate asked for does not exist."""


class UserNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No such user.")


class OrganizationNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No such organization.")


class Conflict(IdentityError):
    """The command clashes with what is stored: a duplicate, or a concurrent change."""


class UsernameTaken(Conflict):
    def __init__(self) -> None:
        super().__init__("The username is already registered.")


class OrganizationNameTaken(Conflict):
    def __init__(self) -> None:
        super().__init__("An organization with this name is already registered.")


class ConcurrentChange(Conflict):
    def __init__(self) -> None:
        super().__init__("The resource was changed concurrently; retry the request.")


class UserAlreadyDisabled(Conflict):
    def __init__(self) -> None:
        super().__init__("The user is already disabled.")


class KeyAlreadyRetired(Conflict):
    def __init__(self) -> None:
        super().__init__("The signing key is already retired.")


class NoSigningKey(IdentityError):
    """No signing key exists yet (the service has never started)."""

    def __init__(self) -> None:
        super().__init__("No signing key has been generated yet.")


class LoginRefused(IdentityError):
    """A password grant failed. ``reason`` is for the event log, never for the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__("The username or password is incorrect.")
        self.reason = reason


class LoginThrottled(LoginRefused):
    """Too many failed logins for the account or the client address."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("throttled")
        self.retry_after = retry_after
