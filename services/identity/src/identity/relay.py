"""Domain events of the identity service as integration events of the catalogue.

Only the fields a schema names are copied: password hashes, private keys and
public JWKs stay in the store. Events with no public meaning (rehashes, the key
ring's bookkeeping) are not relayed.
"""

from __future__ import annotations

from typing import Any

from ehr_events.catalogue import IntegrationEvent
from ehr_events.catalogue.identity import (
    LoginFailedV1,
    LoginSucceededV1,
    OrganizationRegisteredV1,
    SigningKeyActivatedV1,
    SigningKeyRetiredV1,
    UserDisabledV1,
    UserRegisteredV1,
    UserRolesChangedV1,
)

from .domain.login import LoginAttempt
from .domain.organization import Organization
from .domain.signing_key import SigningKey
from .domain.user import User


def _optional_id(value: Any) -> str | None:
    return str(value) if value is not None else None


def translate(domain_event: Any) -> IntegrationEvent | None:
    """The integration event for a domain event, or None when it stays private."""
    subject = str(domain_event.originator_id)
    if isinstance(domain_event, User.Registered):
        return UserRegisteredV1(
            user_id=subject,
            username=domain_event.username,
            roles=tuple(domain_event.roles),
            organization_id=_optional_id(domain_event.organization_id),
        )
    if isinstance(domain_event, User.RolesChanged):
        return UserRolesChangedV1(user_id=subject, roles=tuple(domain_event.roles))
    if isinstance(domain_event, User.Disabled):
        return UserDisabledV1(user_id=subject)
    if isinstance(domain_event, Organization.Registered):
        return OrganizationRegisteredV1(organization_id=subject, name=domain_event.name)
    if isinstance(domain_event, LoginAttempt.Succeeded):
        return LoginSucceededV1(
            user_id=str(domain_event.user_id),
            token_id=domain_event.token_id,
            client_address=domain_event.client_address,
        )
    if isinstance(domain_event, LoginAttempt.Failed):
        return LoginFailedV1(
            username=domain_event.username,
            user_id=_optional_id(domain_event.user_id),
            reason=domain_event.reason,
            client_address=domain_event.client_address,
        )
    if isinstance(domain_event, SigningKey.Activated):
        return SigningKeyActivatedV1(kid=domain_event.kid, algorithm=domain_event.algorithm)
    if isinstance(domain_event, SigningKey.Retired):
        return SigningKeyRetiredV1(kid=domain_event.kid)
    return None
