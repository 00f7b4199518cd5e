"""Routes of the patient resource: registration and demographics."""

# No ``from __future__ import annotations`` here: FastAPI must see the
# dependencies below as objects, built per app from its token verifier.

from typing import TYPE_CHECKING, TypeAlias

from fastapi import APIRouter, Response, status

from ehr_events.policy import roles_for
from ehr_events.security import Principal, TokenVerifier
from ehr_events.web import principal_dependency, run_blocking

from .deps import Records
from .schemas import CommandResult, DemographicsUpdate, PatientCreate, PatientCreated, PatientPublic

if TYPE_CHECKING:
    # what principal_dependency() gives at run time: the verified caller
    Reader: TypeAlias = Principal
    Writer: TypeAlias = Principal


def build_router(verifier: TokenVerifier) -> APIRouter:
    """The ``/patients`` routes, checking tokens with ``verifier``."""
    if not TYPE_CHECKING:
        Reader = principal_dependency(verifier, roles_for("patient.read"))
        Writer = principal_dependency(verifier, roles_for("patient.write"))
    router = APIRouter(prefix="/patients", tags=["patients"])

    # The routes are ``async def`` and move only the event store's work to the
    # thread pool: a plain ``def`` route would also send its dependencies and the
    # response's validation there, each trip costing more CPU than the work.

    @router.post("", status_code=status.HTTP_201_CREATED)
    async def register_patient(
        body: PatientCreate, principal: Writer, records: Records, response: Response
    ) -> PatientCreated:
        """Register a patient under an MRN not registered before."""
        saved = await run_blocking(
            records.register_patient, body.mrn, body.demographics(), principal.actor()
        )
        response.headers["Location"] = f"/patients/{saved.id}"
        return PatientCreated.of_saved(saved)

    @router.get("/{patient_id}")
    async def read_patient(patient_id: str, principal: Reader, records: Records) -> PatientPublic:
        """Read a patient's current demographics."""
        return PatientPublic.of(await run_blocking(records.get_patient, patient_id))

    @router.put("/{patient_id}/demographics")
    async def update_demographics(
        patient_id: str, body: DemographicsUpdate, principal: Writer, records: Records
    ) -> CommandResult:
        """Replace a patient's demographics, as of the version the caller read."""
        saved = await run_blocking(
            records.update_demographics,
            patient_id,
            body.expected_version,
            body.demographics(),
            principal.actor(),
        )
        return CommandResult.of(saved)

    return router
