"""The HTTP API with real tokens: reads, read-your-writes waits, searches, audit, status."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ehr_events.problems import PROBLEM_JSON
from ehr_events.projection import ProjectionRunner
from ehr_events.testing import TokenFactory
from projections.config import ProjectionsSettings
from projections.main import create_app
from projections.queries import get_resource, get_resource_text
from projections.readmodels import make_runner

from .builders import (
    Item,
    access_decided,
    allergy_recorded,
    demographics_updated,
    patient_registered,
)
from .fhir_checks import assert_valid_fhir

PATIENT = "7e0c4b1a-93d2-4f5e-8a6b-1c2d3e4f5a60"
ALLERGY = "9f8e7d6c-5b4a-4c3d-8e2f-1a0b9c8d7e6f"


@pytest.fixture
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
def client(sqlite_settings: ProjectionsSettings, tokens: TokenFactory) -> Iterator[TestClient]:
    app = create_app(sqlite_settings, verifier=tokens.verifier())
    with TestClient(app) as client:
        yield client


@pytest.fixture
def chart(sqlite_settings: ProjectionsSettings) -> Iterator[ProjectionRunner]:
    """The chart projector, as its own process would write (its own engine)."""
    runner = make_runner(sqlite_settings, "chart")
    yield runner
    runner.engine.dispose()


@pytest.fixture
def audit_runner(sqlite_settings: ProjectionsSettings) -> Iterator[ProjectionRunner]:
    runner = make_runner(sqlite_settings, "audit")
    yield runner
    runner.engine.dispose()


def apply_later(runner: ProjectionRunner, items: list[Item], delay: float) -> threading.Thread:
    def apply() -> None:
        time.sleep(delay)
        runner.apply_envelopes(items)

    thread = threading.Thread(target=apply)
    thread.start()
    return thread


def assert_problem(response: object, status: int) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith(PROBLEM_JSON)  # type: ignore[attr-defined]


# -- reads ---------------------------------------------------------------------
def test_a_patient_is_read_with_its_version_and_last_update(
    client: TestClient, chart: ProjectionRunner, tokens: TokenFactory
) -> None:
    registered = patient_registered(PATIENT)
    chart.apply_envelopes([registered])

    response = client.get(f"/chart/Patient/{PATIENT}", headers=tokens.headers(["frontdesk"]))

    assert response.status_code == 200
    body = response.json()
    assert (body["version"], body["resource"]["id"]) == (1, PATIENT)
    assert body["last_updated"] == body["resource"]["meta"]["lastUpdated"]
    assert body["last_updated"] == registered[0].time.isoformat()
    assert_valid_fhir(body["resource"])


def test_an_unknown_resource_is_a_404_problem(client: TestClient, tokens: TokenFactory) -> None:
    response = client.get("/chart/Patient/nobody", headers=tokens.headers())
    assert_problem(response, 404)
    assert response.json()["title"] == "Not found"


def test_only_patient_and_allergy_resources_are_served(
    client: TestClient, tokens: TokenFactory
) -> None:
    assert_problem(client.get("/chart/Observation/x", headers=tokens.headers()), 404)


def test_a_read_needs_a_valid_token(client: TestClient, tokens: TokenFactory) -> None:
    missing = client.get(f"/chart/Patient/{PATIENT}")
    assert_problem(missing, 401)
    assert "Bearer" in missing.headers["www-authenticate"]
    expired = client.get(f"/chart/Patient/{PATIENT}", headers=tokens.headers(ttl=-60))
    assert_problem(expired, 401)
    forged = TokenFactory()  # another key, same key id scheme: not ours
    assert_problem(client.get(f"/chart/Patient/{PATIENT}", headers=forged.headers()), 401)


def test_each_resource_type_needs_its_own_permission(
    client: TestClient, chart: ProjectionRunner, tokens: TokenFactory
) -> None:
    chart.apply_envelopes([patient_registered(PATIENT), allergy_recorded(ALLERGY, PATIENT)])
    frontdesk = tokens.headers(["frontdesk"])
    assert client.get(f"/chart/Patient/{PATIENT}", headers=frontdesk).status_code == 200
    assert_problem(client.get(f"/chart/AllergyIntolerance/{ALLERGY}", headers=frontdesk), 403)
    nurse = tokens.headers(["nurse"])
    assert client.get(f"/chart/AllergyIntolerance/{ALLERGY}", headers=nurse).status_code == 200


# -- read-your-writes ----------------------------------------------------------
def test_a_read_waits_for_a_resource_being_projected(
    client: TestClient, chart: ProjectionRunner, tokens: TokenFactory
) -> None:
    thread = apply_later(chart, [patient_registered(PATIENT)], delay=0.3)
    started = time.monotonic()
    response = client.get(
        f"/chart/Patient/{PATIENT}",
        params={"min_version": 1, "wait_ms": 4000},
        headers=tokens.headers(),
    )
    waited = time.monotonic() - started
    thread.join()

    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1
    assert 0.25 <= waited < 3.0


def test_a_read_waits_for_the_version_it_asks_for(
    client: TestClient, chart: ProjectionRunner, tokens: TokenFactory
) -> None:
    chart.apply_envelopes([patient_registered(PATIENT)])
    thread = apply_later(chart, [demographics_updated(PATIENT, version=2, family="Neu")], 0.3)
    response = client.get(
        f"/chart/Patient/{PATIENT}",
        params={"min_version": 2, "wait_ms": 4000},
        headers=tokens.headers(),
    )
    thread.join()

    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert response.json()["resource"]["name"][0]["family"] == "Neu"


def test_a_version_not_reached_in_time_is_a_404(
    client: TestClient, chart: ProjectionRunner, tokens: TokenFactory
) -> None:
    chart.apply_envelopes([patient_registered(PATIENT)])
    started = time.monotonic()
    response = client.get(
        f"/chart/Patient/{PATIENT}",
        params={"min_version": 2, "wait_ms": 300},
        headers=tokens.headers(),
    )
    assert_problem(response, 404)
    assert time.monotonic() - started >= 0.3
    assert "version" in response.json()["detail"]


def test_a_wait_longer_than_five_seconds_is_refused(
    client: TestClient, tokens: TokenFactory
) -> None:
    response = client.get(
        f"/chart/Patient/{PATIENT}", params={"wait_ms": 5001}, headers=tokens.headers()
    )
    assert_problem(response, 422)


# -- searches ------------------------------------------------------------------
def test_patients_are_searched_with_terms_in_the_body(
    client: TestClient, chart: ProjectionRunner, tokens: TokenFactory
) -> None:
    chart.apply_envelopes(
        [patient_registered(PATIENT), patient_registered("other", mrn="MRN-0002", family="Roe")]
    )
    response = client.post(
        "/chart/Patient/_search",
        json={"family": ["mül"], "birthdate": ["ge1980-01-01"], "count": 10},
        headers=tokens.headers(["frontdesk"]),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 1
    assert [r["id"] for r in body["resources"]] == [PATIENT]

    paged = client.post(
        "/chart/Patient/_search", json={"count": 1, "offset": 1}, headers=tokens.headers()
    ).json()
    assert (paged["total"], len(paged["resources"])) == (2, 1)


def test_a_search_answer_holds_the_stored_resources_as_they_are(
    client: TestClient, chart: ProjectionRunner, tokens: TokenFactory
) -> None:
    chart.apply_envelopes(
        [
            patient_registered(PATIENT, family="Zoë"),
            patient_registered("other", mrn="MRN-0002", family="Zoller", version=2),
            allergy_recorded(ALLERGY, PATIENT),
        ]
    )
    response = client.post(
        "/chart/Patient/_search", json={"family": ["zo"]}, headers=tokens.headers()
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    stored = [get_resource_text(chart.engine, "Patient", i) for i in (PATIENT, "other")]
    texts = [s.json for s in stored if s is not None]
    # the stored text, byte for byte (not parsed and encoded again)
    assert response.text == f'{{"total":2,"resources":[{",".join(texts)}]}}'
    assert response.json() == {"total": 2, "resources": [json.loads(t) for t in texts]}
    assert_valid_fhir(response.json()["resources"][0])

    allergies = client.post(
        "/chart/AllergyIntolerance/_search",
        json={"patient": [PATIENT], "count": 5},
        headers=tokens.headers(),
    ).json()
    allergy = get_resource(chart.engine, "AllergyIntolerance", ALLERGY)
    assert allergy is not None
    assert allergies == {"total": 1, "resources": [allergy.resource]}


def test_a_search_past_the_last_page_still_has_the_total(
    client: TestClient, chart: ProjectionRunner, tokens: TokenFactory
) -> None:
    chart.apply_envelopes([patient_registered(PATIENT)])
    response = client.post(
        "/chart/Patient/_search", json={"count": 10, "offset": 5}, headers=tokens.headers()
    )
    assert response.json() == {"total": 1, "resources": []}
    nothing = client.post(
        "/chart/Patient/_search", json={"family": ["nobody"]}, headers=tokens.headers()
    )
    assert nothing.json() == {"total": 0, "resources": []}


def test_searches_document_their_answer(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/chart/Patient/_search", "/chart/AllergyIntolerance/_search"):
        answer = paths[path]["post"]["responses"]["200"]["content"]["application/json"]
        assert answer["schema"] == {"$ref": "#/components/schemas/SearchResults"}


def test_a_malformed_search_is_refused_without_echoing_the_terms(
    client: TestClient, tokens: TokenFactory
) -> None:
    unknown = client.post(
        "/chart/Patient/_search", json={"name": ["Secretname"]}, headers=tokens.headers()
    )
    assert_problem(unknown, 422)
    assert "Secretname" not in unknown.text
    bad_date = client.post(
        "/chart/Patient/_search", json={"birthdate": ["1980/02/29"]}, headers=tokens.headers()
    )
    assert_problem(bad_date, 400)
    assert "1980/02/29" not in bad_date.text


def test_search_terms_never_reach_the_logs(
    client: TestClient, tokens: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        client.post(
            "/chart/Patient/_search", json={"family": ["Zyxwvut"]}, headers=tokens.headers()
        )
    assert "/chart/Patient/_search" in caplog.text
    assert "Zyxwvut" not in caplog.text


def test_allergies_are_searched_by_patient_with_allergy_permission(
    client: TestClient, chart: ProjectionRunner, tokens: TokenFactory
) -> None:
    chart.apply_envelopes([allergy_recorded(ALLERGY, PATIENT), allergy_recorded("x", "other")])
    body = {"patient": [f"Patient/{PATIENT}"]}
    response = client.post(
        "/chart/AllergyIntolerance/_search", json=body, headers=tokens.headers(["pharmacist"])
    )
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["resources"]] == [ALLERGY]
    denied = client.post(
        "/chart/AllergyIntolerance/_search", json=body, headers=tokens.headers(["biller"])
    )
    assert_problem(denied, 403)


# -- audit and status ----------------------------------------------------------
def test_the_audit_trail_is_for_auditors(
    client: TestClient, audit_runner: ProjectionRunner, tokens: TokenFactory
) -> None:
    audit_runner.apply_envelopes(
        [
            patient_registered(PATIENT),
            access_decided("d-1", patient_id=PATIENT),
            access_decided("d-2", patient_id="someone-else"),
        ]
    )
    assert_problem(client.get("/audit", headers=tokens.headers(["physician"])), 403)
    assert_problem(client.get("/audit"), 401)

    response = client.get(
        "/audit",
        params={"patient_id": PATIENT, "since": "2024-05-01T09:00:00+00:00", "limit": 10},
        headers=tokens.headers(["auditor"]),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 2
    assert [e["category"] for e in body["entries"]] == ["command", "access"]
    assert body["entries"][1]["roles"] == ["physician"]


def test_status_reports_generation_and_applied_events(
    client: TestClient,
    chart: ProjectionRunner,
    audit_runner: ProjectionRunner,
    tokens: TokenFactory,
) -> None:
    chart.apply_envelopes([patient_registered(PATIENT), allergy_recorded(ALLERGY, PATIENT)])
    audit_runner.apply_envelopes([access_decided("d-1", patient_id=PATIENT)])
    response = client.get("/projections/status", headers=tokens.headers(["nurse"]))
    assert response.status_code == 200
    statuses = response.json()
    groups = {name: status.pop("group") for name, status in statuses.items()}
    assert statuses == {
        "chart": {"generation": 1, "applied": 2},
        "audit": {"generation": 1, "applied": 1},
    }
    # the groups the projectors read with, for lag tools: each read model's epoch
    assert groups == {
        "chart": chart.group_id(1),
        "audit": audit_runner.group_id(1),
    }
    assert re.fullmatch(r"ehr\.projection\.chart\.[0-9a-f]{12}\.g1", groups["chart"])
    assert_problem(client.get("/projections/status"), 401)
