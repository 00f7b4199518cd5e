"""The identity domain: aggregates, rules and errors. No I/O here."""

from .errors import IdentityError
from .login import LoginAttempt
from .organization import Organization
from .signing_key import KeyRing, SigningKey
from .user import User

__all__ = ["IdentityError", "KeyRing", "LoginAttempt", "Organization", "SigningKey", "User"]
