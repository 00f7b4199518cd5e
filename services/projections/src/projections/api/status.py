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
        """Generation, number of applied events and consumer group of each read model."""
        statuses = {}
        for name, runner in models.runners().items():
            generation = runner.generation()
            statuses[name] = ProjectionStatus(
                generation=generation,
                applied=runner.applied_count(),
                group=runner.group_id(generation),
            )
        return statuses

    return api
