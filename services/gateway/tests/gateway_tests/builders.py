"""Builders of FHIR resources, records JSON and chart JSON for the gateway's tests.

``chart_patient`` and ``chart_allergy`` render records JSON the way the gateway
assumes the projections service's chart does (FHIR R4 with ``meta``), so the
tests can show that what the chart serves can be sent back.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from ehr_events.testing import TokenFactory, settings_for_test
from gateway.config import GatewaySettings

SNOMED = "http://snomed.info/sct"
PENICILLIN = {"system": SNOMED, "code": "91936005", "display": "Penicillin"}
ANAPHYLAXIS = {"system": SNOMED, "code": "39579001", "display": "Anaphylaxis"}


def gateway_settings(var_dir: Path, upstream_url: str, **overrides: Any) -> GatewaySettings:
    """Test-profile settings with every upstream service at ``upstream_url``."""
    values: dict[str, Any] = {
        "identity_url": upstream_url,
        "records_url": upstream_url,
        "projections_url": upstream_url,
        "jwks_url": f"{upstream_url}/auth/jwks",
        "paging_key": "test-paging-key",
        "read_your_writes_wait_ms": 300,
    }
    values.update(overrides)
    return settings_for_test(GatewaySettings, var_dir, **values)


MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}


def fhir_patient(**overrides: Any) -> dict[str, Any]:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [
            {"use": "official", "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "SSN-77"},
            {
                "use": "usual",
                "type": copy.deepcopy(MR),
                "system": "urn:ehr:mrn",
                "value": "MRN-1001",
            },
        ],
        "name": [{"use": "official", "family": "Zebedee", "given": ["Ada", "Marie"]}],
        "gender": "female",
        "birthDate": "1984-02-29",
        "telecom": [{"system": "phone", "value": "+44 20 7946 0000", "use": "mobile"}],
        "address": [
            {
                "use": "home",
                "line": ["1 Harbour Street"],
                "city": "Leith",
                "state": "Lothian",
                "postalCode": "EH6 6AA",
                "country": "GB",
            }
        ],
    }
    patient.update(overrides)
    return patient


def fhir_allergy(patient_id: str = "p-1", **overrides: Any) -> dict[str, Any]:
    allergy: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "code": "confirmed",
                }
            ]
        },
        "type": "allergy",
        "category": ["medication"],
        "criticality": "high",
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "91936005", "display": "Penicillin"}
            ],
            "text": "Penicillin",
        },
        "patient": {"reference": f"Patient/{patient_id}"},
        "reaction": [
            {
                "manifestation": [
                    {
                        "coding": [
                            {
                                "system": "http://snomed.info/sct",
                                "code": "39579001",
                                "display": "Anaphylaxis",
                            }
                        ]
                    }
                ],
                "severity": "severe",
                "description": "Collapsed after the first dose",
            }
        ],
        "note": [{"text": "Carries an adrenaline pen"}],
    }
    allergy.update(overrides)
    return allergy


def chart_patient(record: dict[str, Any]) -> dict[str, Any]:
    """The chart's FHIR Patient of a records patient (as assumed of projections)."""
    identifiers = []
    for identifier in record["identifiers"]:
        out = {k: v for k, v in identifier.items() if v is not None}
        if identifier["value"] == record["mrn"]:
            out["type"] = copy.deepcopy(MR)
        identifiers.append(out)
    return {
        "resourceType": "Patient",
        "id": record["id"],
        "meta": {"versionId": str(record["version"]), "lastUpdated": record["updated_at"]},
        "identifier": identifiers,
        "active": True,
        "name": [{k: v for k, v in n.items() if v not in (None, [])} for n in record["name"]],
        "telecom": [{k: v for k, v in t.items() if v is not None} for t in record["telecom"]],
        "gender": record["sex"],
        "birthDate": record["birth_date"],
        "address": [
            {
                k: v
                for k, v in {
                    "use": a.get("use"),
                    "line": a.get("line"),
                    "city": a.get("city"),
                    "state": a.get("state"),
                    "postalCode": a.get("postal_code"),
                    "country": a.get("country"),
                }.items()
                if v not in (None, [])
            }
            for a in record["address"]
        ],
    }


def chart_allergy(record: dict[str, Any]) -> dict[str, Any]:
    """The chart's FHIR AllergyIntolerance of a records allergy (as assumed of projections)."""

    def concept(c: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "coding": [{k: v for k, v in x.items() if v is not None} for x in c["coding"]]
        }
        if c.get("text"):
            out["text"] = c["text"]
        return out

    resource: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "id": record["id"],
        "meta": {"versionId": str(record["version"]), "lastUpdated": record["recorded_at"]},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": record["clinical_status"],
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "code": record["verification_status"],
                }
            ]
        },
        "code": concept(record["code"]),
        "patient": {"reference": f"Patient/{record['patient_id']}"},
        "recordedDate": record["recorded_at"],
        "reaction": [
            {
                k: v
                for k, v in {
                    "manifestation": [concept(m) for m in r["manifestation"]],
                    "severity": r.get("severity"),
                    "description": r.get("description"),
                }.items()
                if v is not None
            }
            for r in record["reactions"]
        ],
    }
    for key in ("type", "criticality"):
        if record.get(key):
            resource[key] = record[key]
    if record.get("category"):
        resource["category"] = record["category"]
    if record.get("note"):
        resource["note"] = [{"text": record["note"]}]
    return resource


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def valid_claims(factory: TokenFactory, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": factory.issuer,
        "aud": factory.audience,
        "sub": "forger",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "j-1",
        "roles": ["physician"],
    }
    claims.update(overrides)
    return claims


def forged_tokens(factory: TokenFactory) -> dict[str, str | None]:
    """Authorization header values the edge must refuse, by what is wrong with them."""
    public_pem = factory.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_input = _segments({"alg": "HS256", "typ": "JWT", "kid": factory.kid}, valid_claims(factory))
    hs_signature = _b64(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest())
    none_token = _segments({"alg": "none", "typ": "JWT", "kid": factory.kid}, valid_claims(factory))
    header, _, signature = factory.token().split(".")
    tampered_claims = _b64(json.dumps(valid_claims(factory, roles=["admin"])).encode())
    impostor = TokenFactory(factory.issuer, factory.audience)
    impostor.kid = factory.kid  # claims our key id, signs with its own key
    now = int(time.time())
    return {
        "missing": None,
        "not bearer": "Basic dXNlcjpwYXNz",
        "not a jwt": "Bearer not-a-jwt",
        "alg none": f"Bearer {none_token}.",
        "hs256 with the public key": f"Bearer {hs_input}.{hs_signature}",
        "tampered claims": f"Bearer {header}.{tampered_claims}.{signature}",
        "another key, our kid": f"Bearer {impostor.token()}",
        "expired": f"Bearer {factory.token(ttl=-120)}",
        "not yet valid": f"Bearer {factory.token(nbf=now + 600)}",
        "wrong issuer": f"Bearer {factory.token(iss='https://evil.example/auth')}",
        "wrong audience": f"Bearer {factory.token(aud='someone-else')}",
        "unknown kid": f"Bearer {TokenFactory(factory.issuer, factory.audience).token()}",
    }
