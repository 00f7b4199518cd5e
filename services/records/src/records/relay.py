"""From the records domain events to the integration events of the catalogue.

The outbox relay calls :func:`translate` on every notification of the records
event store; what it returns is published on ``ehr.records.events``, keyed by
patient. Domain events may evolve; the integration events they map to do not.
"""

from __future__ import annotations

from typing import Any

from ehr_events.catalogue import IntegrationEvent
from ehr_events.catalogue.records import (
    AllergyRecordedV1,
    AllergyRefutedV1,
    Demographics,
    PatientDemographicsUpdatedV1,
    PatientRegisteredV1,
)

from .domain import AllergyIntolerance, Patient


def translate(domain_event: Any) -> IntegrationEvent | None:
    """The integration event of a domain event, or None for events kept private."""
    if isinstance(domain_event, Patient.Registered):
        return PatientRegisteredV1(
            patient_id=str(domain_event.originator_id),
            mrn=domain_event.mrn,
            demographics=Demographics.model_validate(domain_event.demographics),
        )
    if isinstance(domain_event, Patient.DemographicsUpdated):
        return PatientDemographicsUpdatedV1(
            patient_id=str(domain_event.originator_id),
            demographics=Demographics.model_validate(domain_event.demographics),
        )
    if isinstance(domain_event, AllergyIntolerance.Recorded):
        # the event holds the JSON shapes of the catalogue: validate, don't rebuild
        return AllergyRecordedV1.model_validate(
            {
                "allergy_id": str(domain_event.originator_id),
                "patient_id": str(domain_event.patient_id),
                "code": domain_event.code,
                "clinical_status": domain_event.clinical_status,
                "verification_status": domain_event.verification_status,
                "type": domain_event.type,
                "category": domain_event.category,
                "criticality": domain_event.criticality,
                "reactions": domain_event.reactions,
                "note": domain_event.note,
                "recorded_at": domain_event.recorded_at,
                "recorder_id": domain_event.recorder_id,
            }
        )
    if isinstance(domain_event, AllergyIntolerance.Refuted):
        return AllergyRefutedV1(
            allergy_id=str(domain_event.originator_id),
            patient_id=str(domain_event.patient_id),
            reason=domain_event.reason,
            refuted_at=domain_event.refuted_at,
        )
    return None
