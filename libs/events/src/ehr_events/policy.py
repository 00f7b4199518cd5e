"""Who may do what: the one table of permissions, by role.

The gateway maps each route to a permission and checks it before forwarding;
each service checks the same permission again on the verified token.
"""

from __future__ import annotations

from .security import Principal, Role

CLINICAL = frozenset({Role.physician, Role.nurse})

PERMISSIONS: dict[str, frozenset[str]] = {
    # demographics: front desk registers and corrects them; billing and labs read them
    "patient.read": frozenset(
        {Role.physician, Role.nurse, Role.pharmacist, Role.frontdesk, Role.labtech, Role.biller}
    ),
    "patient.write": frozenset({Role.physician, Role.nurse, Role.frontdesk}),
    # clinical data: no front desk, no billing
    "allergy.read": frozenset({Role.physician, Role.nurse, Role.pharmacist}),
    "allergy.write": frozenset({Role.physician, Role.nurse, Role.pharmacist}),
    "audit.read": frozenset({Role.auditor}),
    "user.admin": frozenset({Role.admin}),
}


def roles_for(permission: str) -> frozenset[str]:
    """Roles granted ``permission`` (an unknown permission grants nobody)."""
    return PERMISSIONS.get(permission, frozenset())


def allows(principal: Principal, permission: str) -> bool:
    """Whether the principal holds a role granted ``permission``."""
    return principal.has_any_role(roles_for(permission))
