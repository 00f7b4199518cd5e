"""User accounts, for administrators."""

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from ehr_events.security import Role

from ..domain.rules import PASSWORD_MAX_LENGTH, USERNAME_MAX_LENGTH
from ..domain.user import User
from .deps import Identity


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=USERNAME_MAX_LENGTH)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX_LENGTH)
    roles: list[Role] = Field(min_length=1)
    #: The organisation's id or its name.
    organization: str | None = Field(default=None, max_length=200)


class UserRolesUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[Role] = Field(min_length=1)


class UserPublic(BaseModel):
    id: UUID
    username: str
    roles: list[str]
    organization_id: UUID | None
    disabled: bool

    @classmethod
    def of(cls, user: User) -> "UserPublic":
        return cls(
            id=user.id,
            username=user.username,
            roles=list(user.roles),
            organization_id=user.organization_id,
            disabled=user.disabled,
        )


def build_router(admin: Any) -> APIRouter:
    """The /users router; every route needs role admin."""
    router = APIRouter(prefix="/users", tags=["users"])

    @router.post("", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
    def create_user(
        body: UserCreate, identity: Identity, principal: admin, response: Response
    ) -> UserPublic:
        """Register a user account."""
        organization_id = (
            identity.resolve_organization(body.organization) if body.organization else None
        )
        user = identity.register_user(
            body.username,
            body.password,
            [role.value for role in body.roles],
            organization_id,
            actor=principal.actor(),
        )
        response.headers["Location"] = f"/users/{user.id}"
        return UserPublic.of(user)

    @router.get("/{user_id}", response_model=UserPublic)
    def read_user(user_id: UUID, identity: Identity, principal: admin) -> UserPublic:
        """A user account (never its password hash)."""
        return UserPublic.of(identity.get_user(user_id))

    @router.put("/{user_id}/roles", response_model=UserPublic)
    def change_roles(
        user_id: UUID, body: UserRolesUpdate, identity: Identity, principal: admin
    ) -> UserPublic:
        """Replace the roles of a user."""
        user = identity.change_user_roles(
            user_id, [role.value for role in body.roles], actor=principal.actor()
        )
        return UserPublic.of(user)

    @router.post("/{user_id}/disable", response_model=UserPublic)
    def disable_user(user_id: UUID, identity: Identity, principal: admin) -> UserPublic:
        """Disable a user: no further tokens are issued to it."""
        return UserPublic.of(identity.disable_user(user_id, actor=principal.actor()))

    return router
