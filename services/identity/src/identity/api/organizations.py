"""Organisations, for administrators."""

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from ..domain.organization import Organization
from ..domain.rules import ORGANIZATION_NAME_MAX_LENGTH
from .deps import Identity


class OrganizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=ORGANIZATION_NAME_MAX_LENGTH)


class OrganizationPublic(BaseModel):
    id: UUID
    name: str

    @classmethod
    def of(cls, organization: Organization) -> "OrganizationPublic":
        return cls(id=organization.id, name=organization.name)


def build_router(admin: Any) -> APIRouter:
    """The /organizations router; every route needs role admin."""
    router = APIRouter(prefix="/organizations", tags=["organizations"])

    @router.post("", status_code=status.HTTP_201_CREATED, response_model=OrganizationPublic)
    def create_organization(
        body: OrganizationCreate, identity: Identity, principal: admin, response: Response
    ) -> OrganizationPublic:
        """Register an organisation."""
        organization = identity.register_organization(body.name, actor=principal.actor())
        response.headers["Location"] = f"/organizations/{organization.id}"
        return OrganizationPublic.of(organization)

    @router.get("/{organization_id}", response_model=OrganizationPublic)
    def read_organization(
        organization_id: UUID, identity: Identity, principal: admin
    ) -> OrganizationPublic:
        """An organisation."""
        return OrganizationPublic.of(identity.get_organization(organization_id))

    return router
