"""Pure rules of the identity domain: names, roles, passwords, the key window."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import datetime, timedelta

from ehr_events.security import Role

from .errors import InvalidOrganizationName, InvalidRoles, InvalidUsername, WeakPassword

USERNAME_MAX_LENGTH = 64
USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{1,62}[a-z0-9]")
ORGANIZATION_NAME_MAX_LENGTH = 200
PASSWORD_MAX_LENGTH = 1024
#: Prefix of every stored password hash: Argon2id, never anything reversible.
PASSWORD_HASH_PREFIX = "$argon2id$"
KEY_ALGORITHM = "ES256"


def normalise_username(username: str) -> str:
    """The canonical form of a username: NFKC, trimmed, lower case."""
    return unicodedata.normalize("NFKC", username).strip().lower()


def check_username(username: str) -> str:
    """The canonical username, or :class:`InvalidUsername`."""
    canonical = normalise_username(username)
    if not USERNAME_PATTERN.fullmatch(canonical):
        raise InvalidUsername(
            "A username has 3 to 64 characters: letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit."
        )
    return canonical


def username_for_log(username: str) -> str:
    """What a failed login records of the submitted username: canonical and bounded."""
    return normalise_username(username)[:USERNAME_MAX_LENGTH]


def normalise_organization_name(name: str) -> str:
    """The natural key of an organisation: NFKC, inner whitespace collapsed, case-folded."""
    return " ".join(unicodedata.normalize("NFKC", name).split()).casefold()


def check_organization_name(name: str) -> str:
    """The display name (trimmed, whitespace collapsed), or :class:`InvalidOrganizationName`."""
    display = " ".join(unicodedata.normalize("NFKC", name).split())
    if not display or len(display) > ORGANIZATION_NAME_MAX_LENGTH:
        raise InvalidOrganizationName(
            f"An organization name has 1 to {ORGANIZATION_NAME_MAX_LENGTH} characters."
        )
    if any(unicodedata.category(ch).startswith("C") for ch in display):
        raise InvalidOrganizationName("An organization name has no control characters.")
    return display


def check_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """The roles, deduplicated and sorted, each one of :class:`Role`; at least one."""
    known = {role.value for role in Role}
    chosen = set()
    for role in roles:
        if role not in known:
            raise InvalidRoles(f"Roles must be among: {', '.join(sorted(known))}.")
        chosen.add(str(role))
    if not chosen:
        raise InvalidRoles("A user holds at least one role.")
    return tuple(sorted(chosen))


def check_password(password: str, min_length: int) -> None:
    """The password policy: long enough, not absurdly long, not blank."""
    if len(password) < min_length:
        raise WeakPassword(f"A password has at least {min_length} characters.")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise WeakPassword(f"A password has at most {PASSWORD_MAX_LENGTH} characters.")
    if not password.strip():
        raise WeakPassword("A password is not only whitespace.")


def check_password_hash(password_hash: str) -> None:
    """Only Argon2id hashes are stored: never a password by mistake."""
    if not password_hash.startswith(PASSWORD_HASH_PREFIX):
        raise ValueError("a password hash must be an Argon2id encoded hash")


def still_published(retired_at: datetime, now: datetime, grace: timedelta) -> bool:
    """A retired key stays in the JWKS until every token it signed has expired."""
    return now < retired_at + grace
