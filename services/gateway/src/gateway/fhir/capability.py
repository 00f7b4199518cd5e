"""The CapabilityStatement of the facade: exactly what the routes implement."""

from __future__ import annotations

from typing import Any

from .search import SEARCH_PARAMS

SEARCH_PARAM_TYPES = {
    "family": "string",
    "given": "string",
    "birthdate": "date",
    "identifier": "token",
    "patient": "reference",
}

DEFINITIONS = "http://hl7.org/fhir/SearchParameter/"

INTERACTIONS = {
    "Patient": ("create", "read", "update", "search-type"),
    "AllergyIntolerance": ("create", "read", "search-type"),
}


def capability_statement(base_url: str, published: str) -> dict[str, Any]:
    """The server's CapabilityStatement (FHIR 4.0.1, JSON only, SMART-on-FHIR security)."""
    resources = []
    for resource_type, interactions in INTERACTIONS.items():
        params = [
            {
                "name": name,
                "type": SEARCH_PARAM_TYPES[name],
                "definition": DEFINITIONS + _definition(resource_type, name),
            }
            for name in sorted(SEARCH_PARAMS[resource_type])
        ]
        params.append({"name": "_count", "type": "number"})
        resource: dict[str, Any] = {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": code} for code in interactions],
            "versioning": "versioned-update" if "update" in interactions else "versioned",
            "readHistory": False,
            "updateCreate": False,
            "searchParam": params,
        }
        if "update" in interactions:
            resource["conditionalUpdate"] = False
        resources.append(resource)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "EHR platform",
        "kind": "instance",
        "software": {"name": "EHR gateway FHIR facade"},
        "implementation": {"description": "EHR platform FHIR R4 facade", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ],
                            "text": "OAuth2 bearer tokens (SMART-on-FHIR)",
                        }
                    ],
                    "description": (
                        "Every request needs an OAuth2 bearer token (JWT) issued by "
                        f"{base_url.rsplit('/fhir', 1)[0]}/auth/token; "
                        "signing keys are published at /auth/jwks."
                    ),
                },
                "resource": resources,
            }
        ],
    }


def _definition(resource_type: str, name: str) -> str:
    if name in ("family", "given", "birthdate"):
        return f"individual-{name}"
    if name == "identifier" and resource_type == "Patient":
        return "Patient-identifier"
    if name == "patient":
        return "clinical-patient"
    return f"{resource_type}-{name}"
