"""The gateway's one route table: who may call what, and what each call means.

Every route the gateway serves is a :class:`Rule` in :data:`ROUTES`: its method and
path template, the permission of :mod:`ehr_events.policy` it needs (``PUBLIC``
for none), the action it stands for in the access log, and where the patient it
concerns is found. The edge refuses any request that matches no rule, so a route
added to the app without a rule here is unreachable rather than unprotected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from ehr_events.policy import PERMISSIONS

#: A FHIR resource id (http://hl7.org/fhir/R4/datatypes.html#id).
RESOURCE_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

#: The permission of public routes: no token is needed.
PUBLIC = None


class Action(StrEnum):
    """What a request does, as recorded on its access decision."""

    read = "read"
    search = "search"
    create = "create"
    update = "update"
    login = "login"
    other = "other"


class PatientFrom(StrEnum):
    """Where the patient a request concerns is found."""

    none = "none"
    #: The ``{id}`` of the path is the patient's id.
    path = "path"
    #: A query parameter (``Rule.patient_param``) references the patient.
    query = "query"
    #: Only the route knows it, from the body or the upstream response.
    route = "route"


@dataclass(frozen=True)
class Rule:
    """One route of the gateway and its policy."""

    method: str
    template: str
    permission: str | None
    action: Action
    patient: PatientFrom = PatientFrom.none
    patient_param: str | None = None
    #: Whether the request is recorded as an access decision.
    audited: bool = True
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.permission is not PUBLIC and self.permission not in PERMISSIONS:
            raise ValueError(f"{self.method} {self.template}: unknown permission")
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    @property
    def public(self) -> bool:
        return self.permission is PUBLIC

    def patient_id(self, path_params: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The patient id this request concerns, when the rule can tell before routing."""
        found = None
        if self.patient is PatientFrom.path:
            found = path_params.get("id")
        elif self.patient is PatientFrom.query and self.patient_param:
            found = patient_id_from_reference(query.get(self.patient_param))
        # only what looks like a resource id is recorded: a URL is no place for PHI
        return found if found and RESOURCE_ID.match(found) else None


def patient_id_from_reference(value: str | None) -> str | None:
    """``Patient/<id>``, ``<base>/Patient/<id>`` or a bare ``<id>`` to the id."""
    if not value or "," in value:
        return None
    reference = value.rstrip("/")
    if "/" in reference:
        head, _, tail = reference.rpartition("/")
        if not head.endswith("Patient"):
            return None
        reference = tail
    return reference or None


ROUTES: tuple[Rule, ...] = (
    # identity, proxied; identity throttles logins itself as well
    Rule("POST", "/auth/token", PUBLIC, Action.login),
    Rule("GET", "/auth/jwks", PUBLIC, Action.other, audited=False),
    Rule("GET", "/health/live", PUBLIC, Action.other, audited=False),
    Rule("GET", "/health/ready", PUBLIC, Action.other, audited=False),
    # FHIR facade
    Rule("GET", "/fhir/metadata", PUBLIC, Action.read, audited=False),
    Rule("POST", "/fhir/Patient", "patient.write", Action.create, PatientFrom.route),
    Rule("GET", "/fhir/Patient", "patient.read", Action.search),
    Rule("POST", "/fhir/Patient/_search", "patient.read", Action.search),
    Rule("GET", "/fhir/Patient/{id}", "patient.read", Action.read, PatientFrom.path),
    Rule("PUT", "/fhir/Patient/{id}", "patient.write", Action.update, PatientFrom.path),
    Rule("POST", "/fhir/AllergyIntolerance", "allergy.write", Action.create, PatientFrom.route),
    Rule(
        "GET",
        "/fhir/AllergyIntolerance",
        "allergy.read",
        Action.search,
        PatientFrom.query,
        patient_param="patient",
    ),
    Rule(
        "POST", "/fhir/AllergyIntolerance/_search", "allergy.read", Action.search, PatientFrom.route
    ),
    Rule("GET", "/fhir/AllergyIntolerance/{id}", "allergy.read", Action.read, PatientFrom.route),
    # the access log itself
    Rule("GET", "/api/audit", "audit.read", Action.search, PatientFrom.query, "patient_id"),
)


@dataclass(frozen=True)
class Match:
    """A request matched to its rule, with the path parameters."""

    rule: Rule
    path_params: dict[str, str]


class RouteTable:
    """Finds the rule of a request; literal segments win over ``{parameters}``."""

    def __init__(self, rules: tuple[Rule, ...] = ROUTES) -> None:
        self.rules = sorted(rules, key=lambda r: r.template.count("{"))

    def match(self, method: str, path: str) -> Match | None:
        for rule in self.rules:
            if rule.method == method:
                found = rule.pattern.match(path)
                if found:
                    return Match(rule, found.groupdict())
        return None

    def knows_path(self, path: str) -> bool:
        """Whether any method is routed at ``path`` (405 rather than 404)."""
        return any(rule.pattern.match(path) for rule in self.rules)
