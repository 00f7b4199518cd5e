"""The records HTTP API: contract, authorisation, and refusals that write nothing."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from ehr_events.problems import PROBLEM_JSON
from ehr_events.testing import TokenFactory, settings_for_test
from records.api import allergies, patients
from records.application import RecordsApplication
from records.config import RecordsSettings
from records.main import create_app

from .builders import (
    BIRTH_DATE,
    FAMILY,
    GIVEN,
    allergy,
    demographics_body,
    patient_body,
    unique_mrn,
)

UNKNOWN_ID = "3f0e5a4e-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
def client(tmp_path: Path, tokens: TokenFactory) -> Iterator[TestClient]:
    settings = settings_for_test(RecordsSettings, tmp_path)
    with TestClient(create_app(settings, verifier=tokens.verifier())) as client:
        yield client


def records(client: TestClient) -> RecordsApplication:
    app: RecordsApplication = client.app.state.records  # type: ignore[attr-defined]
    return app


def as_role(tokens: TokenFactory, role: str) -> dict[str, str]:
    return tokens.headers([role])


def register(client: TestClient, tokens: TokenFactory, **overrides: Any) -> dict[str, Any]:
    response = client.post(
        "/patients", json=patient_body(**overrides), headers=as_role(tokens, "frontdesk")
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def record_allergy(client: TestClient, tokens: TokenFactory, patient_id: str) -> dict[str, Any]:
    response = client.post(
        f"/patients/{patient_id}/allergies", json=allergy(), headers=as_role(tokens, "physician")
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


class Refusal:
    """Checks a refused request: its problem details, and that nothing was written."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.position = records(client).position()

    def check(self, response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
        body: dict[str, Any] = response.json()
        assert body["status"] == status
        # the problem never echoes what was submitted
        for phi in (FAMILY, GIVEN, BIRTH_DATE):
            assert phi not in response.text
        assert records(self.client).position() == self.position
        return body


# the contract, when all goes well


def test_a_patient_is_registered_read_and_updated(client: TestClient, tokens: TokenFactory) -> None:
    mrn = unique_mrn()

    created = client.post(
        "/patients", json=patient_body(mrn.lower()), headers=as_role(tokens, "frontdesk")
    )
    assert created.status_code == 201
    registered = created.json()
    assert created.headers["location"] == f"/patients/{registered['id']}"
    assert registered["mrn"] == mrn
    assert registered["version"] == 1
    assert registered["position"] == records(client).position()
    assert registered["name"][0]["family"] == FAMILY

    read = client.get(f"/patients/{registered['id']}", headers=as_role(tokens, "biller"))
    assert read.status_code == 200
    patient = read.json()
    assert set(patient) == {
        "id",
        "version",
        "mrn",
        "identifiers",
        "name",
        "birth_date",
        "sex",
        "telecom",
        "address",
        "created_at",
        "modified_at",
    }
    assert (patient["birth_date"], patient["sex"]) == (BIRTH_DATE, "female")

    updated = client.put(
        f"/patients/{registered['id']}/demographics",
        json=demographics_body(1, sex="other", telecom=[]),
        headers=as_role(tokens, "nurse"),
    )
    assert updated.status_code == 200
    assert updated.json() == {
        "id": registered["id"],
        "version": 2,
        "position": registered["position"] + 1,
    }
    reread = client.get(f"/patients/{registered['id']}", headers=as_role(tokens, "frontdesk"))
    assert (reread.json()["version"], reread.json()["sex"], reread.json()["telecom"]) == (
        2,
        "other",
        [],
    )


def test_an_allergy_is_recorded_read_and_refuted(client: TestClient, tokens: TokenFactory) -> None:
    patient = register(client, tokens)

    created = client.post(
        f"/patients/{patient['id']}/allergies",
        json=allergy(),
        headers=tokens.headers(["physician"], subject="doc-7"),
    )
    assert created.status_code == 201
    recorded = created.json()
    assert set(recorded) == {"id", "patient_id", "version", "position"}
    assert (recorded["patient_id"], recorded["version"]) == (patient["id"], 1)
    assert created.headers["location"] == f"/allergies/{recorded['id']}"

    read = client.get(f"/allergies/{recorded['id']}", headers=as_role(tokens, "pharmacist"))
    assert read.status_code == 200
    assert read.json()["code"]["text"] == "Penicillin"
    assert read.json()["recorder_id"] == "doc-7"
    assert read.json()["verification_status"] == "confirmed"

    refuted = client.post(
        f"/allergies/{recorded['id']}/refute",
        json={"expected_version": 1, "reason": "skin test negative"},
        headers=as_role(tokens, "nurse"),
    )
    assert refuted.status_code == 200
    assert refuted.json() == {
        "id": recorded["id"],
        "version": 2,
        "position": recorded["position"] + 1,
    }
    reread = client.get(f"/allergies/{recorded['id']}", headers=as_role(tokens, "physician"))
    assert reread.json()["verification_status"] == "refuted"
    assert reread.json()["refuted_reason"] == "skin test negative"


def test_health_routes_answer_without_a_token(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").json() == {"status": "ok"}


# authentication and authorisation


def test_a_request_without_a_token_is_unauthorised(client: TestClient) -> None:
    refusal = Refusal(client)
    response = client.post("/patients", json=patient_body())
    refusal.check(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_token_from_another_issuer_key_is_unauthorised(client: TestClient) -> None:
    refusal = Refusal(client)
    forged = TokenFactory().headers(["physician"])
    refusal.check(client.post("/patients", json=patient_body(), headers=forged), 401)


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        ("biller", "POST", "/patients/{patient}/allergies", allergy()),
        ("frontdesk", "POST", "/patients/{patient}/allergies", allergy()),
        ("frontdesk", "GET", "/allergies/{allergy}", None),
        ("biller", "GET", "/allergies/{allergy}", None),
        ("biller", "POST", "/allergies/{allergy}/refute", {}),
        ("biller", "POST", "/patients", patient_body()),
        ("labtech", "PUT", "/patients/{patient}/demographics", demographics_body(1)),
        ("auditor", "GET", "/patients/{patient}", None),
        ("patient", "GET", "/patients/{patient}", None),
    ],
)
def test_a_role_without_the_permission_is_forbidden(
    client: TestClient,
    tokens: TokenFactory,
    role: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    patient = register(client, tokens)
    recorded = record_allergy(client, tokens, patient["id"])
    refusal = Refusal(client)

    url = path.format(patient=patient["id"], allergy=recorded["id"])
    response = client.request(method, url, json=body, headers=as_role(tokens, role))

    refusal.check(response, 403)


# malformed and invalid requests


def test_malformed_json_is_refused(client: TestClient, tokens: TokenFactory) -> None:
    refusal = Refusal(client)
    text = json.dumps(patient_body())[:-5]
    response = client.post(
        "/patients",
        content=text,
        headers={**as_role(tokens, "frontdesk"), "content-type": "application/json"},
    )
    refusal.check(response, 400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**patient_body(), "nickname": "x"}, "nickname"),
        (patient_body(name=[{"family": FAMILY, "middle": "x"}]), "name.0.middle"),
    ],
)
def test_an_unknown_field_is_refused_by_name(
    client: TestClient, tokens: TokenFactory, body: dict[str, Any], field: str
) -> None:
    refusal = Refusal(client)
    response = client.post("/patients", json=body, headers=as_role(tokens, "frontdesk"))
    problem = refusal.check(response, 422)
    assert {"field": field, "message": "unknown field"} in problem["errors"]


@pytest.mark.parametrize("birth_date", ["2024-02-30", "2024-13-01", "yesterday", 86400])
def test_an_impossible_birth_date_is_refused(
    client: TestClient, tokens: TokenFactory, birth_date: Any
) -> None:
    refusal = Refusal(client)
    response = client.post(
        "/patients", json=patient_body(birth_date=birth_date), headers=as_role(tokens, "frontdesk")
    )
    problem = refusal.check(response, 422)
    assert [e["field"] for e in problem["errors"]] == ["birth_date"]


def test_a_birth_date_in_the_future_is_refused(client: TestClient, tokens: TokenFactory) -> None:
    refusal = Refusal(client)
    response = client.post(
        "/patients",
        json=patient_body(birth_date="2999-01-01"),
        headers=as_role(tokens, "frontdesk"),
    )
    problem = refusal.check(response, 422)
    assert problem["errors"] == [{"field": "birth_date", "message": "in the future"}]


def test_a_body_over_one_mebibyte_is_refused(client: TestClient, tokens: TokenFactory) -> None:
    refusal = Refusal(client)
    body = patient_body(address=[{"line": ["x" * (1024 * 1024)]}])
    response = client.post("/patients", json=body, headers=as_role(tokens, "frontdesk"))
    refusal.check(response, 413)


def test_a_streamed_body_over_one_mebibyte_is_refused_as_too_large(
    client: TestClient, tokens: TokenFactory
) -> None:
    refusal = Refusal(client)

    def chunks():  # no Content-Length: the limit counts what arrives
        yield b'{"mrn": "MRN-1", "address": [{"line": ["'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"]}]}'

    headers = {**as_role(tokens, "frontdesk"), "Content-Type": "application/json"}
    response = client.post("/patients", content=chunks(), headers=headers)
    # 413, not the 400 of a body that failed to parse
    refusal.check(response, 413)


def test_an_allergy_with_invalid_values_is_refused(
    client: TestClient, tokens: TokenFactory
) -> None:
    patient = register(client, tokens)
    refusal = Refusal(client)
    response = client.post(
        f"/patients/{patient['id']}/allergies",
        json=allergy(criticality="extreme", verification_status="refuted"),
        headers=as_role(tokens, "physician"),
    )
    problem = refusal.check(response, 422)
    assert {e["field"] for e in problem["errors"]} == {"criticality", "verification_status"}


# refusals of the domain


def test_a_second_registration_of_an_mrn_conflicts(
    client: TestClient, tokens: TokenFactory
) -> None:
    mrn = unique_mrn()
    first = register(client, tokens, mrn=mrn)
    refusal = Refusal(client)

    response = client.post(
        "/patients", json=patient_body(mrn=mrn.lower()), headers=as_role(tokens, "frontdesk")
    )

    problem = refusal.check(response, 409)
    assert problem["type"].endswith("duplicate-patient")
    assert mrn not in response.text and mrn.lower() not in response.text
    assert (
        client.get(f"/patients/{first['id']}", headers=as_role(tokens, "nurse")).json()["version"]
        == 1
    )


def test_a_stale_demographics_update_conflicts(client: TestClient, tokens: TokenFactory) -> None:
    patient = register(client, tokens)
    url = f"/patients/{patient['id']}/demographics"
    first = client.put(url, json=demographics_body(1), headers=as_role(tokens, "frontdesk"))
    assert first.status_code == 200
    refusal = Refusal(client)

    response = client.put(url, json=demographics_body(1), headers=as_role(tokens, "frontdesk"))

    problem = refusal.check(response, 409)
    assert problem["type"].endswith("version-conflict")


def test_refuting_twice_conflicts(client: TestClient, tokens: TokenFactory) -> None:
    patient = register(client, tokens)
    recorded = record_allergy(client, tokens, patient["id"])
    url = f"/allergies/{recorded['id']}/refute"
    assert client.post(url, json={}, headers=as_role(tokens, "physician")).status_code == 200
    refusal = Refusal(client)

    response = client.post(url, json={"reason": "again"}, headers=as_role(tokens, "physician"))

    problem = refusal.check(response, 409)
    assert problem["type"].endswith("allergy-already-refuted")


def test_an_allergy_of_an_unknown_patient_is_not_found(
    client: TestClient, tokens: TokenFactory
) -> None:
    refusal = Refusal(client)
    response = client.post(
        f"/patients/{UNKNOWN_ID}/allergies", json=allergy(), headers=as_role(tokens, "physician")
    )
    refusal.check(response, 404)


@pytest.mark.parametrize(
    ("role", "path"),
    [
        ("nurse", f"/patients/{UNKNOWN_ID}"),
        ("nurse", "/patients/not-a-uuid"),
        ("nurse", f"/allergies/{UNKNOWN_ID}"),
        ("nurse", "/allergies/12345"),
    ],
)
def test_unknown_or_malformed_ids_are_not_found(
    client: TestClient, tokens: TokenFactory, role: str, path: str
) -> None:
    refusal = Refusal(client)
    refusal.check(client.get(path, headers=as_role(tokens, role)), 404)


def test_a_patient_id_does_not_address_an_allergy(client: TestClient, tokens: TokenFactory) -> None:
    patient = register(client, tokens)
    recorded = record_allergy(client, tokens, patient["id"])
    refusal = Refusal(client)

    refusal.check(client.get(f"/patients/{recorded['id']}", headers=as_role(tokens, "nurse")), 404)
    refusal.check(client.get(f"/allergies/{patient['id']}", headers=as_role(tokens, "nurse")), 404)


# where the work runs: the event store off the event loop, nothing else in the thread pool


def test_the_routes_and_their_dependencies_run_on_the_event_loop(tokens: TokenFactory) -> None:
    # a plain ``def`` route or dependency costs a trip through the thread pool
    # each, and FastAPI then also validates the route's answer there
    def calls(dependant: Dependant) -> Iterator[Any]:
        yield dependant.call
        for dependency in dependant.dependencies:
            yield from calls(dependency)

    verifier = tokens.verifier()
    routers = (patients.build_router(verifier), allergies.build_router(verifier))
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) == 6
    for route in routes:
        for call in calls(route.dependant):
            coroutine = inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
                type(call).__call__  # a dependency object's call
            )
            assert coroutine, f"{route.path}: {call} is not async"


def test_the_event_store_is_used_off_the_event_loop(
    client: TestClient, tokens: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = records(client)
    on_the_loop: dict[str, list[bool]] = {}

    def watched(name: str) -> Any:
        method = getattr(app, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
                on_the_loop.setdefault(name, []).append(True)
            except RuntimeError:
                on_the_loop.setdefault(name, []).append(False)
            return method(*args, **kwargs)

        return call

    commands = ("register_patient", "get_patient", "update_demographics")
    commands += ("record_allergy", "get_allergy", "refute_allergy")
    for name in commands:
        monkeypatch.setattr(app, name, watched(name))

    patient = register(client, tokens)
    assert client.get(f"/patients/{patient['id']}", headers=as_role(tokens, "nurse")).is_success
    updated = client.put(
        f"/patients/{patient['id']}/demographics",
        json=demographics_body(1),
        headers=as_role(tokens, "nurse"),
    )
    assert updated.is_success
    recorded = record_allergy(client, tokens, patient["id"])
    assert client.get(f"/allergies/{recorded['id']}", headers=as_role(tokens, "nurse")).is_success
    refuted = client.post(
        f"/allergies/{recorded['id']}/refute", json={}, headers=as_role(tokens, "physician")
    )
    assert refuted.is_success

    assert set(on_the_loop) == set(commands)
    assert not any(any(calls) for calls in on_the_loop.values()), on_the_loop
