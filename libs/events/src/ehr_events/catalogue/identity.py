"""Integration events of the identity context. No secret ever appears here."""

from __future__ import annotations

from typing import Literal

from . import IntegrationEvent, catalogue

Role = Literal[
    "physician",
    "nurse",
    "pharmacist",
    "frontdesk",
    "biller",
    "labtech",
    "patient",
    "auditor",
    "admin",
]


@catalogue.register
class OrganizationRegisteredV1(IntegrationEvent):
    event_type = "ehr.identity.OrganizationRegistered.v1"

    organization_id: str
    name: str


@catalogue.register
class UserRegisteredV1(IntegrationEvent):
    event_type = "ehr.identity.UserRegistered.v1"

    user_id: str
    username: str
    roles: tuple[Role, ...]
    organization_id: str | None = None


@catalogue.register
class UserRolesChangedV1(IntegrationEvent):
    event_type = "ehr.identity.UserRolesChanged.v1"

    user_id: str
    roles: tuple[Role, ...]


@catalogue.register
class UserDisabledV1(IntegrationEvent):
    event_type = "ehr.identity.UserDisabled.v1"

    user_id: str


@catalogue.register
class LoginSucceededV1(IntegrationEvent):
    event_type = "ehr.identity.LoginSucceeded.v1"

    user_id: str
    token_id: str
    client_address: str | None = None


@catalogue.register
class LoginFailedV1(IntegrationEvent):
    """A refused login. The password is never part of it."""

    event_type = "ehr.identity.LoginFailed.v1"

    username: str
    user_id: str | None = None
    reason: Literal["unknown-user", "bad-password", "disabled", "throttled"]
    client_address: str | None = None


@catalogue.register
class SigningKeyActivatedV1(IntegrationEvent):
    event_type = "ehr.identity.SigningKeyActivated.v1"

    kid: str
    algorithm: Literal["ES256", "RS256"]


@catalogue.register
class SigningKeyRetiredV1(IntegrationEvent):
    event_type = "ehr.identity.SigningKeyRetired.v1"

    kid: str
