"""The gateway's integration events: its access decisions, for the outbox relay."""

from __future__ import annotations

from typing import Any

from ehr_events.catalogue import IntegrationEvent
from ehr_events.catalogue.gateway import AccessDecidedV1

from .access import AccessDecision


def translate(domain_event: Any) -> IntegrationEvent | None:
    """The integration event of a gateway domain event (None: kept private)."""
    if isinstance(domain_event, AccessDecision.Decided):
        return AccessDecidedV1(
            decision_id=str(domain_event.originator_id),
            user_id=domain_event.user_id,
            roles=tuple(domain_event.roles),
            organization_id=domain_event.organization_id,
            patient_id=domain_event.patient_id,
            method=domain_event.method,
            route=domain_event.route,
            action=domain_event.action,
            outcome=domain_event.outcome,
            status=domain_event.status,
            reason=domain_event.reason,
            client_address=domain_event.client_address,
            decided_at=domain_event.decided_at,
        )
    return None
