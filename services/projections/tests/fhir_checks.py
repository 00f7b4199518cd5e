"""Checks that a resource is FHIR R4 JSON: the R4B models plus the invariants we rely on."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.patient import Patient

from projections.fhir import VERIFICATION_STATUS_SYSTEM

MODELS = {"Patient": Patient, "AllergyIntolerance": AllergyIntolerance}


def assert_valid_fhir(resource: dict[str, Any]) -> None:
    """Validates with the R4B model, has no null or empty value, honours ait-1/ait-2."""
    MODELS[resource["resourceType"]].model_validate(resource)
    _assert_no_empty(resource, resource["resourceType"])
    if resource["resourceType"] == "AllergyIntolerance":
        codes = [
            c.get("code")
            for c in resource.get("verificationStatus", {}).get("coding", [])
            if c.get("system") == VERIFICATION_STATUS_SYSTEM
        ]
        in_error = "entered-in-error" in codes
        # ait-1: a clinical status unless entered-in-error; ait-2: none if entered-in-error
        assert in_error or "clinicalStatus" in resource, "ait-1 violated"
        assert not in_error or "clinicalStatus" not in resource, "ait-2 violated"


def _assert_no_empty(value: Any, path: str) -> None:
    assert value is not None, f"{path} is null"
    if isinstance(value, dict):
        assert value, f"{path} is an empty object"
        for key, item in value.items():
            _assert_no_empty(item, f"{path}.{key}")
    elif isinstance(value, list):
        assert value, f"{path} is an empty array"
        for index, item in enumerate(value):
            _assert_no_empty(item, f"{path}[{index}]")
    elif isinstance(value, str):
        assert value.strip(), f"{path} is blank"
