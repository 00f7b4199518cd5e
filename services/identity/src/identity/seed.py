"""Demo accounts for the development profile: one per staff role, password ``demo``."""

from __future__ import annotations

import logging

from ehr_events.config import DefaultSecretError, Profile

from .application import IdentityApplication
from .domain.errors import OrganizationNameTaken, UsernameTaken

log = logging.getLogger("identity.seed")

DEMO_ORGANIZATION = "Demo Clinic"
DEMO_PASSWORD = "demo"  # noqa: S105 - development profile only, refused elsewhere
DEMO_ROLES = (
    "physician",
    "nurse",
    "pharmacist",
    "frontdesk",
    "biller",
    "labtech",
    "auditor",
    "admin",
)


def seed_demo_users(identity: IdentityApplication) -> int:
    """Create the demo organisation and users that do not exist yet; returns how many users."""
    if Profile(identity.settings.profile) is not Profile.development:
        raise DefaultSecretError("demo users exist only in the development profile")
    organization = identity.find_organization(DEMO_ORGANIZATION)
    if organization is None:
        try:
            organization = identity.register_organization(DEMO_ORGANIZATION)
        except OrganizationNameTaken:  # another process seeded it meanwhile
            organization = identity.find_organization(DEMO_ORGANIZATION)
    assert organization is not None
    created = 0
    for role in DEMO_ROLES:
        if identity.find_user(role) is not None:
            continue
        try:
            identity.register_user(
                role, DEMO_PASSWORD, [role], organization.id, enforce_password_policy=False
            )
            created += 1
        except UsernameTaken:
            pass
    if created:
        log.info("seeded %d demo users", created)
    return created
