"""How far each read model has got."""

# no `from __future__ import annotations`: FastAPI must see the dependency aliases
# built inside the router factories as real objects, not as strings.
from fastapi import APIRouter

from ehr_events.security import TokenVerifier
from ehr_events.web import principal_dependency

from ..readmodels import ReadModels
from .schemas import ProjectionStatus


def router(verifier: TokenVerifier, models: ReadModels) -> APIRouter:
    api = APIRouter(prefix="/projections", tags=["projections"])
    Caller = principal_dependency(verifier)

    @api.get("/status", response_model=dict[str, ProjectionStatus])
    def status(_: Caller) -> dict[str, ProjectionStatus]:  # type: ignore[valid-type]
        """Generation and number of applied events of each read model."""
        return {
            name: ProjectionStatus(generation=runner.generation(), applied=runner.applied_count())
            for name, runner in models.runners().items()
        }

    return api
