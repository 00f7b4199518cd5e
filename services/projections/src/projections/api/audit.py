"""The audit trail, for auditors."""

# no `from __future__ import annotations`: FastAPI must see the dependency aliases
# built inside the router factories as real objects, not as strings.
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from ehr_events.policy import roles_for
from ehr_events.security import TokenVerifier
from ehr_events.web import principal_dependency

from ..queries import audit
from ..readmodels import ReadModels
from .schemas import AuditEntries, AuditEntryPublic


def router(verifier: TokenVerifier, models: ReadModels) -> APIRouter:
    api = APIRouter(prefix="/audit", tags=["audit"])
    Auditor = principal_dependency(verifier, roles_for("audit.read"))

    @api.get("", response_model=AuditEntries)
    def list_entries(
        _: Auditor,  # type: ignore[valid-type]
        patient_id: Annotated[str | None, Query(max_length=64)] = None,
        user_id: Annotated[str | None, Query(max_length=64)] = None,
        since: Annotated[datetime | None, Query(description="Inclusive")] = None,
        until: Annotated[datetime | None, Query(description="Exclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> AuditEntries:
        """List audit entries, oldest first, by patient, user and time."""
        page = audit(
            models.audit_engine,
            patient_id=patient_id,
            user_id=user_id,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
        return AuditEntries(total=page.total, entries=[AuditEntryPublic(**e) for e in page.entries])

    return api
