"""The spine, end to end: real processes, real broker, HTTP only.

A clinician logs in, registers a patient and records an allergy through the
gateway; the chart projection builds the chart; the FHIR facade reads it back.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

from ehr_events.devplatform import Platform

from . import builders

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"
DISTINCTIVE_FAMILY = "Quixotically"
DISTINCTIVE_GIVEN = "Zebedee"


def login(platform: Platform, username: str, password: str = "demo") -> str:
    response = httpx.post(
        f"{platform.gateway_url}/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"].lower() == "bearer"
    assert 0 < body["expires_in"] <= 900
    return body["access_token"]


@pytest.fixture(scope="module")
def client(platform: Platform) -> httpx.Client:
    return httpx.Client(base_url=platform.gateway_url, timeout=15)


@pytest.fixture(scope="module")
def physician(platform: Platform) -> dict[str, str]:
    return {"Authorization": f"Bearer {login(platform, 'physician')}"}


@pytest.fixture(scope="module")
def created(client: httpx.Client, physician: dict[str, str]) -> dict[str, Any]:
    """A patient with a distinctive name, created through the FHIR facade."""
    response = client.post(
        "/fhir/Patient",
        json=builders.patient(DISTINCTIVE_FAMILY, DISTINCTIVE_GIVEN),
        headers={**physician, "Content-Type": FHIR_JSON},
    )
    assert response.status_code == 201, response.text
    return {"response": response, "resource": response.json()}


def count_patients(client: httpx.Client, headers: dict[str, str], family: str) -> int:
    response = client.post("/fhir/Patient/_search", data={"family": family}, headers=headers)
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def test_metadata_is_a_valid_capability_statement(client: httpx.Client) -> None:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200
    statement = CapabilityStatement.model_validate(response.json())
    types = {r.type for r in statement.rest[0].resource}
    assert types == {"Patient", "AllergyIntolerance"}


def test_create_answers_201_with_location_and_etag(created: dict[str, Any]) -> None:
    response = created["response"]
    resource = created["resource"]
    assert response.headers["content-type"].startswith(FHIR_JSON)
    assert response.headers["etag"] == 'W/"1"'
    assert f"/fhir/Patient/{resource['id']}" in response.headers["location"]
    Patient.model_validate(resource)


def test_create_then_read_at_once_never_404s(
    client: httpx.Client, physician: dict[str, str]
) -> None:
    for i in range(5):
        response = client.post(
            "/fhir/Patient",
            json=builders.patient("Readback", f"Number{i}"),
            headers={**physician, "Content-Type": FHIR_JSON},
        )
        assert response.status_code == 201
        read = client.get(f"/fhir/Patient/{response.json()['id']}", headers=physician)
        assert read.status_code == 200, read.text
        assert read.json()["name"][0]["given"] == [f"Number{i}"]


def test_read_returns_the_valid_patient_with_its_etag(
    client: httpx.Client, physician: dict[str, str], created: dict[str, Any]
) -> None:
    patient_id = created["resource"]["id"]
    response = client.get(f"/fhir/Patient/{patient_id}", headers=physician)
    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"1"'
    patient = Patient.model_validate(response.json())
    assert patient.name[0].family == DISTINCTIVE_FAMILY
    assert str(patient.birthDate) == "1979-05-17"


def test_search_by_family_given_birthdate_and_identifier(
    client: httpx.Client, physician: dict[str, str], created: dict[str, Any]
) -> None:
    resource = created["resource"]
    mrn = resource["identifier"][0]["value"]
    for params in (
        {"family": DISTINCTIVE_FAMILY.lower()[:6]},
        {"given": DISTINCTIVE_GIVEN},
        {"birthdate": "1979-05-17", "family": DISTINCTIVE_FAMILY},
        {"identifier": f"urn:ehr:mrn|{mrn}"},
    ):
        response = client.get("/fhir/Patient", params=params, headers=physician)
        assert response.status_code == 200, (params, response.text)
        bundle = Bundle.model_validate(response.json())
        assert bundle.type == "searchset"
        assert resource["id"] in [e.resource.id for e in bundle.entry or []], params
    posted = client.post(
        "/fhir/Patient/_search", data={"family": DISTINCTIVE_FAMILY}, headers=physician
    )
    assert posted.status_code == 200
    assert posted.json()["total"] == 1


def test_search_pages_with_count_and_opaque_links(
    client: httpx.Client, physician: dict[str, str], created: dict[str, Any]
) -> None:
    # the create-then-read test made five patients named Readback
    response = client.get(
        "/fhir/Patient", params={"family": "Readback", "_count": 2}, headers=physician
    )
    bundle = response.json()
    assert bundle["total"] == 5
    assert len(bundle["entry"]) == 2
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert "Readback" not in links["next"]
    seen = [e["resource"]["id"] for e in bundle["entry"]]
    while "next" in links:
        page = client.get(links["next"], headers=physician).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        links = {link["relation"]: link["url"] for link in page["link"]}
    assert len(seen) == len(set(seen)) == 5


def test_allergy_is_recorded_read_and_searched_by_patient(
    client: httpx.Client, physician: dict[str, str], created: dict[str, Any]
) -> None:
    patient_id = created["resource"]["id"]
    response = client.post(
        "/fhir/AllergyIntolerance",
        json=builders.allergy(patient_id),
        headers={**physician, "Content-Type": FHIR_JSON},
    )
    assert response.status_code == 201, response.text
    allergy_id = response.json()["id"]
    read = client.get(f"/fhir/AllergyIntolerance/{allergy_id}", headers=physician)
    assert read.status_code == 200
    allergy = AllergyIntolerance.model_validate(read.json())
    assert allergy.patient.reference == f"Patient/{patient_id}"
    found = client.get(
        "/fhir/AllergyIntolerance", params={"patient": f"Patient/{patient_id}"}, headers=physician
    )
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [allergy_id]


def test_update_needs_the_current_version(client: httpx.Client, physician: dict[str, str]) -> None:
    created = client.post(
        "/fhir/Patient",
        json=builders.patient("Versioned", "Vera"),
        headers={**physician, "Content-Type": FHIR_JSON},
    ).json()
    changed = {**created, "gender": "female"}
    changed.pop("meta", None)
    ok = client.put(
        f"/fhir/Patient/{created['id']}",
        json=changed,
        headers={**physician, "Content-Type": FHIR_JSON, "If-Match": 'W/"1"'},
    )
    assert ok.status_code == 200, ok.text
    assert ok.headers["etag"] == 'W/"2"'
    stale = client.put(
        f"/fhir/Patient/{created['id']}",
        json=changed,
        headers={**physician, "Content-Type": FHIR_JSON, "If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412
    OperationOutcome.model_validate(stale.json())
    read = client.get(f"/fhir/Patient/{created['id']}", headers=physician).json()
    assert read["meta"]["versionId"] == "2" and read["gender"] == "female"


def test_the_same_mrn_twice_is_refused_with_409(
    client: httpx.Client, physician: dict[str, str]
) -> None:
    body = builders.patient("Twice", "Tom", mrn="MRN-TWICE-0001")
    first = client.post(
        "/fhir/Patient", json=body, headers={**physician, "Content-Type": FHIR_JSON}
    )
    assert first.status_code == 201
    second = client.post(
        "/fhir/Patient", json=body, headers={**physician, "Content-Type": FHIR_JSON}
    )
    assert second.status_code == 409
    OperationOutcome.model_validate(second.json())
    assert count_patients(client, physician, "Twice") == 1


def _forged_tokens(platform: Platform, good: str) -> dict[str, str]:
    header = jwt.get_unverified_header(good)
    claims = jwt.decode(good, options={"verify_signature": False})

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    jwks = httpx.get(f"{platform.gateway_url}/auth/jwks").json()
    public_jwk = jwks["keys"][0]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    public_pem = ECAlgorithm.from_jwk(json.dumps(public_jwk)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac

    hs_input = f"{b64({'alg': 'HS256', 'kid': header['kid'], 'typ': 'JWT'})}.{b64(claims)}"
    hs_sig = (
        base64.urlsafe_b64encode(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )
    stranger = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())

    def signed(**changes: Any) -> str:
        return jwt.encode(
            {**claims, **changes}, stranger, algorithm="ES256", headers={"kid": header["kid"]}
        )

    def unknown_kid() -> str:
        return jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": "no-such-key"})

    parts = good.split(".")
    return {
        "alg none": f"{b64({'alg': 'none', 'kid': header['kid']})}.{b64(claims)}.",
        "HS256 with the public key": f"{hs_input}.{hs_sig}",
        "bad signature": f"{parts[0]}.{b64({**claims, 'roles': ['admin']})}.{parts[2]}",
        "signed by a stranger": signed(),
        "expired": signed(exp=now - 60),
        "future nbf": signed(nbf=now + 600),
        "wrong iss": signed(iss="https://elsewhere.invalid/auth"),
        "wrong aud": signed(aud="other"),
        "unknown kid": unknown_kid(),
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/fhir/Patient/00000000-0000-0000-0000-000000000000"),
        ("GET", "/fhir/Patient?family=x"),
        ("POST", "/fhir/AllergyIntolerance"),
    ],
)
def test_forged_and_missing_tokens_get_401(
    platform: Platform, client: httpx.Client, physician: dict[str, str], method: str, path: str
) -> None:
    good = physician["Authorization"].split()[1]
    assert client.request(method, path).status_code == 401
    for name, token in _forged_tokens(platform, good).items():
        response = client.request(
            method, path, headers={"Authorization": f"Bearer {token}"}, json={}
        )
        assert response.status_code == 401, name
        OperationOutcome.model_validate(response.json())


def test_frontdesk_may_not_read_allergies(
    platform: Platform, client: httpx.Client, created: dict[str, Any]
) -> None:
    frontdesk = {"Authorization": f"Bearer {login(platform, 'frontdesk')}"}
    response = client.get(
        "/fhir/AllergyIntolerance",
        params={"patient": created["resource"]["id"]},
        headers=frontdesk,
    )
    assert response.status_code == 403
    OperationOutcome.model_validate(response.json())


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"resourceType": "Patient", "name": [', FHIR_JSON),
        (b'{"resourceType": "Patient", "gender": 12}', FHIR_JSON),
        (b'{"resourceType": "Patient", "hairColour": "red"}', FHIR_JSON),
        (
            b'{"resourceType": "Patient", "name": [{"family": "Bad"}], "birthDate": "2001-02-30"}',
            FHIR_JSON,
        ),
        (
            b'{"resourceType": "Patient", "name": [{"family": "Big"}], "x": "'
            + b"a" * (1024 * 1024 + 10)
            + b'"}',
            FHIR_JSON,
        ),
    ],
    ids=["malformed", "wrong type", "unknown field", "impossible date", "over 1 MiB"],
)
def test_bad_bodies_get_4xx_operation_outcomes_and_write_nothing(
    client: httpx.Client, physician: dict[str, str], body: bytes, content_type: str
) -> None:
    before = count_patients(client, physician, "Bad") + count_patients(client, physician, "Big")
    response = client.post(
        "/fhir/Patient", content=body, headers={**physician, "Content-Type": content_type}
    )
    assert 400 <= response.status_code < 500, response.status_code
    if len(body) > 1024 * 1024:
        assert response.status_code == 413
    outcome = OperationOutcome.model_validate(response.json())
    assert outcome.issue
    after = count_patients(client, physician, "Bad") + count_patients(client, physician, "Big")
    assert after == before


def test_access_decisions_and_commands_reach_the_audit_trail(
    platform: Platform, client: httpx.Client, created: dict[str, Any]
) -> None:
    auditor = {"Authorization": f"Bearer {login(platform, 'auditor')}"}
    patient_id = created["resource"]["id"]
    deadline = time.monotonic() + 20
    while True:
        response = client.get("/api/audit", params={"patient_id": patient_id}, headers=auditor)
        assert response.status_code == 200, response.text
        entries = response.json()["entries"]
        outcomes = {(e.get("source"), e.get("outcome")) for e in entries}
        if ("records", "success") in outcomes or len(entries) >= 2:
            break
        assert time.monotonic() < deadline, entries
        time.sleep(0.3)
    assert any(e.get("source") == "gateway" for e in entries)
    assert DISTINCTIVE_FAMILY not in response.text


def test_the_patients_name_never_reaches_a_log_file(
    platform: Platform, client: httpx.Client, physician: dict[str, str], created: dict[str, Any]
) -> None:
    # a search by name puts it into a query string: it still must not be logged
    client.get("/fhir/Patient", params={"family": DISTINCTIVE_FAMILY}, headers=physician)
    time.sleep(1)
    files = platform.log_files()
    assert any(f.name == "gateway.log" for f in files)
    for path in files:
        text = path.read_text(errors="replace")
        assert DISTINCTIVE_FAMILY not in text, path.name
        assert DISTINCTIVE_GIVEN not in text, path.name
        assert "1979-05-17" not in text, path.name
        assert "Lantern Row" not in text, path.name


def test_stop_and_start_keeps_the_data(
    platform: Platform, client: httpx.Client, created: dict[str, Any]
) -> None:
    patient_id = created["resource"]["id"]
    platform.stop()
    platform.start()
    physician = {"Authorization": f"Bearer {login(platform, 'physician')}"}
    response = client.get(f"/fhir/Patient/{patient_id}", headers=physician)
    assert response.status_code == 200
    assert response.json()["name"][0]["family"] == DISTINCTIVE_FAMILY
    # and the platform still takes writes that reach the chart after the restart
    again = client.post(
        "/fhir/Patient",
        json=builders.patient("Afterwards", "Ada"),
        headers={**physician, "Content-Type": FHIR_JSON},
    )
    assert again.status_code == 201
    # the search reads the chart, which the restarted projector fills once it has
    # rejoined its consumer group (seconds on the development broker)
    deadline = time.monotonic() + 30
    while count_patients(client, physician, "Afterwards") < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert count_patients(client, physician, "Afterwards") == 1
