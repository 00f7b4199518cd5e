"""Routes of the allergy resource: recording, reading and refuting."""

# No ``from __future__ import annotations`` here: FastAPI must see the
# dependencies below as objects, built per app from its token verifier.

from typing import TYPE_CHECKING, TypeAlias

from fastapi import APIRouter, Response, status

from ehr_events.policy import roles_for
from ehr_events.security import Principal, TokenVerifier
from ehr_events.web import principal_dependency, run_blocking

from .deps import Records
from .schemas import AllergyCreate, AllergyCreated, AllergyPublic, AllergyRefute, CommandResult

if TYPE_CHECKING:
    # what principal_dependency() gives at run time: the verified caller
    Reader: TypeAlias = Principal
    Writer: TypeAlias = Principal


def build_router(verifier: TokenVerifier) -> APIRouter:
    """The allergy routes, checking tokens with ``verifier``."""
    if not TYPE_CHECKING:
        Reader = principal_dependency(verifier, roles_for("allergy.read"))
        Writer = principal_dependency(verifier, roles_for("allergy.write"))
    router = APIRouter(tags=["allergies"])

    # async routes that move only the event store's work to the thread pool (see
    # patients.py)

    @router.post("/patients/{patient_id}/allergies", status_code=status.HTTP_201_CREATED)
    async def record_allergy(
        patient_id: str,
        body: AllergyCreate,
        principal: Writer,
        records: Records,
        response: Response,
    ) -> AllergyCreated:
        """Record an allergy or intolerance of a registered patient."""
        saved = await run_blocking(
            records.record_allergy, patient_id, body.model_dump(), principal.actor()
        )
        response.headers["Location"] = f"/allergies/{saved.id}"
        return AllergyCreated.of_saved(saved)

    @router.get("/allergies/{allergy_id}")
    async def read_allergy(allergy_id: str, principal: Reader, records: Records) -> AllergyPublic:
        """Read an allergy as currently recorded."""
        return AllergyPublic.of(await run_blocking(records.get_allergy, allergy_id))

    @router.post("/allergies/{allergy_id}/refute")
    async def refute_allergy(
        allergy_id: str, body: AllergyRefute, principal: Writer, records: Records
    ) -> CommandResult:
        """Refute an allergy: it was recorded, but the patient does not have it."""
        saved = await run_blocking(
            records.refute_allergy,
            allergy_id,
            body.expected_version,
            body.reason,
            principal.actor(),
        )
        return CommandResult.of(saved)

    return router
