"""The access log (audit read model), proxied to the projections service."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ehr_events.problems import Problem

from ..deps import Access, Services

router = APIRouter(prefix="/api", tags=["audit"])

AUDIT_PARAMS = frozenset({"patient_id", "user_id", "since", "until", "limit", "offset"})


@router.get("/audit")
async def read_audit(request: Request, access: Access, services: Services) -> JSONResponse:
    """Audit events, filtered by patient, user and time (auditors only)."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in AUDIT_PARAMS:
            raise Problem(
                f"Unknown query parameter {name}.",
                status=400,
                title="Bad request",
                errors=[{"field": name, "message": "unknown parameter"}],
            )
        if name in params:
            raise Problem(f"Query parameter {name} is repeated.", status=400, title="Bad request")
        params[name] = value
    body = await services.projections.call("GET", "/audit", access.caller(), params=params)
    return JSONResponse(body)
