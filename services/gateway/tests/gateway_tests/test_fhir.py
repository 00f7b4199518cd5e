"""The FHIR facade through the ASGI app, against the upstream stand-in."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qs

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

from ehr_events.devinfra import free_port
from ehr_events.testing import TokenFactory

from .builders import fhir_allergy, fhir_patient
from .standin import StandIn

FHIR = "application/fhir+json"
ORIGIN = "http://127.0.0.1:8000"
BASE = f"{ORIGIN}/fhir"


@pytest.fixture
def clinician(tokens: TokenFactory) -> dict[str, str]:
    return {**tokens.headers(["physician"], subject="dr-who"), "Content-Type": FHIR}


def create_patient(client: TestClient, headers: dict[str, str], **overrides: object) -> dict:
    response = client.post("/fhir/Patient", json=fhir_patient(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def outcome_of(response) -> dict:
    assert response.headers["content-type"].startswith(FHIR)
    body = response.json()
    OperationOutcome.model_validate(body)
    return body


# --- metadata ---------------------------------------------------------------------------


def test_capability_statement_is_valid_r4_and_lists_exactly_what_is_served(
    client: TestClient,
) -> None:
    response = client.get("/fhir/metadata")

    assert response.headers["content-type"].startswith(FHIR)
    statement = CapabilityStatement.model_validate(response.json())
    assert statement.fhirVersion == "4.0.1"
    assert (statement.status, statement.kind, statement.format) == ("active", "instance", ["json"])
    (rest,) = statement.rest
    assert rest.mode == "server"
    assert rest.security.service[0].coding[0].code == "SMART-on-FHIR"
    served = {
        r.type: (
            sorted(i.code for i in r.interaction),
            sorted(p.name for p in r.searchParam),
        )
        for r in rest.resource
    }
    assert served == {
        "Patient": (
            ["create", "read", "search-type", "update"],
            ["_count", "birthdate", "family", "given", "identifier"],
        ),
        "AllergyIntolerance": (["create", "read", "search-type"], ["_count", "patient"]),
    }


# --- Patient create and read ------------------------------------------------------------


def test_create_returns_201_with_the_charts_version_location_and_etag(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    response = client.post("/fhir/Patient", json=fhir_patient(), headers=clinician)

    assert response.status_code == 201
    body = response.json()
    Patient.model_validate(body)
    patient_id = body["id"]
    assert response.headers["location"] == f"{BASE}/Patient/{patient_id}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["last-modified"].endswith("GMT")
    assert body["active"] is True  # rendered by the chart, not by the gateway
    # the records command carried the caller's own token and address
    (command,) = upstream.seen("/patients")
    assert command.headers["authorization"] == clinician["Authorization"]
    assert command.headers["x-forwarded-for"] == "testclient"
    assert json.loads(command.body)["mrn"] == "MRN-1001"
    # read-your-writes: the chart was asked for that version
    (chart,) = upstream.seen("/chart/")
    assert parse_qs(chart.query) == {"min_version": ["1"], "wait_ms": ["300"]}


def test_names_beyond_ascii_cross_every_hop_as_utf_8(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    name = [{"use": "official", "family": "Ångström-Ðurić", "given": ["Zoë", "李"]}]
    response = client.post("/fhir/Patient", json=fhir_patient(name=name), headers=clinician)

    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith(FHIR)
    # the answer carries the characters themselves, as UTF-8, not \u escapes
    assert "Ångström-Ðurić".encode() in response.content
    assert response.json()["name"][0]["given"] == ["Zoë", "李"]
    (command,) = upstream.seen("/patients")
    assert json.loads(command.body)["name"][0]["family"] == "Ångström-Ðurić"
    read = client.get(f"/fhir/Patient/{response.json()['id']}", headers=clinician)
    assert read.json()["name"] == response.json()["name"]


def test_create_answers_from_records_when_the_chart_lags_beyond_the_wait(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    upstream.chart_down = True

    response = client.post("/fhir/Patient", json=fhir_patient(), headers=clinician)

    assert response.status_code == 201
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    assert body["name"][0]["family"] == "Zebedee"
    assert "active" not in body


def test_prefer_return_minimal_skips_the_body(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    response = client.post(
        "/fhir/Patient", json=fhir_patient(), headers={**clinician, "Prefer": "return=minimal"}
    )

    assert response.status_code == 201
    assert response.content == b""
    assert response.headers["etag"] == 'W/"1"'
    assert upstream.seen("/chart/") == []


def test_a_created_patient_is_never_404_while_the_chart_catches_up(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    patient_id = create_patient(client, clinician)["id"]
    upstream.requests.clear()
    upstream.chart_lags = True

    response = client.get(f"/fhir/Patient/{patient_id}", headers=clinician)

    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"1"'
    assert response.json()["id"] == patient_id
    # chart first, then records to learn the version, then the chart waiting for it
    calls = [(r.path, r.query) for r in upstream.seen()]
    assert calls == [
        (f"/chart/Patient/{patient_id}", ""),
        (f"/patients/{patient_id}", ""),
        (f"/chart/Patient/{patient_id}", "min_version=1&wait_ms=300"),
    ]


def test_reading_an_unknown_patient_is_404_not_found(
    client: TestClient, clinician: dict[str, str]
) -> None:
    response = client.get("/fhir/Patient/no-such-patient", headers=clinician)

    assert response.status_code == 404
    assert outcome_of(response)["issue"][0]["code"] == "not-found"


def test_an_id_that_is_not_a_fhir_id_is_refused_before_any_call(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    response = client.get("/fhir/Patient/bad$id", headers=clinician)

    assert response.status_code == 400
    assert upstream.seen() == []


def test_a_duplicate_mrn_is_409_duplicate(client: TestClient, clinician: dict[str, str]) -> None:
    create_patient(client, clinician)

    response = client.post("/fhir/Patient", json=fhir_patient(), headers=clinician)

    assert response.status_code == 409
    assert outcome_of(response)["issue"][0]["code"] == "duplicate"


# --- Patient update ---------------------------------------------------------------------


def test_update_needs_if_match(client: TestClient, clinician: dict[str, str]) -> None:
    patient = create_patient(client, clinician)

    response = client.put(f"/fhir/Patient/{patient['id']}", json=patient, headers=clinician)

    assert response.status_code == 428
    assert outcome_of(response)["issue"][0]["code"] == "required"


def test_update_with_the_current_version_returns_the_new_version(
    client: TestClient, clinician: dict[str, str]
) -> None:
    patient = create_patient(client, clinician)
    patient["name"][0]["family"] = "Zebedee-Smith"

    response = client.put(
        f"/fhir/Patient/{patient['id']}", json=patient, headers={**clinician, "If-Match": 'W/"1"'}
    )

    assert response.status_code == 200
    assert response.headers["etag"] == 'W/"2"'
    assert response.json()["name"][0]["family"] == "Zebedee-Smith"
    assert response.json()["meta"]["versionId"] == "2"


def test_update_with_a_stale_version_is_412(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    patient = create_patient(client, clinician)
    url, headers = f"/fhir/Patient/{patient['id']}", {**clinician, "If-Match": 'W/"1"'}
    assert client.put(url, json=patient, headers=headers).status_code == 200

    stale = client.put(url, json=patient, headers=headers)

    assert stale.status_code == 412
    assert outcome_of(stale)["issue"][0]["code"] == "conflict"
    assert [json.loads(r.body)["expected_version"] for r in upstream.seen("/patients/")] == [1, 1]


def test_update_body_id_must_match_the_url(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    patient = create_patient(client, clinician)
    upstream.requests.clear()

    response = client.put(
        f"/fhir/Patient/{patient['id']}",
        json={**patient, "id": "someone-else"},
        headers={**clinician, "If-Match": 'W/"1"'},
    )

    assert response.status_code == 400
    assert outcome_of(response)["issue"][0]["expression"] == ["Patient.id"]
    assert upstream.seen() == []


# --- invalid bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "status", "expression"),
    [
        (b'{"resourceType": "Patient", "name": [', 400, None),
        (json.dumps(fhir_patient(nickname="Zed")).encode(), 400, "Patient.nickname"),
        (json.dumps(fhir_patient(birthDate="1984-02-30")).encode(), 400, "Patient.birthDate"),
        (json.dumps(fhir_patient(name=[{"family": 7}])).encode(), 400, "Patient.name[0].family"),
        (json.dumps(fhir_patient(gender="robot")).encode(), 422, "Patient.gender"),
        (b"[]", 400, None),
        (b"", 400, None),
    ],
)
def test_invalid_patient_bodies_are_outcomes_and_nothing_is_written(
    content: bytes,
    status: int,
    expression: str | None,
    client: TestClient,
    upstream: StandIn,
    clinician: dict[str, str],
) -> None:
    response = client.post("/fhir/Patient", content=content, headers=clinician)

    assert response.status_code == status
    outcome = outcome_of(response)
    if expression:
        assert expression in {e for i in outcome["issue"] for e in i.get("expression", [])}
    for value in ("Zed", "1984-02-30", "robot"):
        assert value not in response.text
    assert upstream.seen() == []


def test_a_body_that_is_not_json_is_415(client: TestClient, clinician: dict[str, str]) -> None:
    response = client.post(
        "/fhir/Patient", content=b"<Patient/>", headers={**clinician, "Content-Type": "text/xml"}
    )

    assert response.status_code == 415
    assert outcome_of(response)["issue"][0]["code"] == "not-supported"


# --- search -----------------------------------------------------------------------------


def register_family(client: TestClient, headers: dict[str, str], family: str, n: int) -> None:
    for i in range(n):
        create_patient(
            client,
            headers,
            identifier=[{"system": "urn:ehr:mrn", "value": f"{family}-{i}"}],
            name=[{"family": family, "given": [f"G{i}"]}],
        )


def test_search_pages_through_opaque_links_without_phi(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    register_family(client, clinician, "Zebedee", 3)
    register_family(client, clinician, "Other", 1)

    first = client.get("/fhir/Patient?family=Zebedee&_count=2", headers=clinician)

    assert first.status_code == 200
    bundle = first.json()
    Bundle.model_validate(bundle)
    assert (bundle["type"], bundle["total"], len(bundle["entry"])) == ("searchset", 3, 2)
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"{BASE}/Patient/{entry['resource']['id']}"
    assert entry["search"] == {"mode": "match"}
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert set(links) == {"self", "next"}
    for url in links.values():
        assert url.startswith(f"{BASE}/Patient?_page=")
        assert "Zebedee" not in url and "family" not in url
    # following next gives the last page, with a way back
    second = client.get(links["next"].removeprefix(ORIGIN), headers=clinician)
    page = second.json()
    assert second.status_code == 200
    assert len(page["entry"]) == 1
    assert {link["relation"] for link in page["link"]} == {"self", "previous"}
    assert [json.loads(r.body)["offset"] for r in upstream.seen("/chart/Patient/_search")] == [0, 2]


def test_a_paging_link_is_useless_to_another_caller_or_when_altered(
    client: TestClient, clinician: dict[str, str], tokens: TokenFactory
) -> None:
    register_family(client, clinician, "Zebedee", 2)
    bundle = client.get("/fhir/Patient?family=Zebedee&_count=1", headers=clinician).json()
    next_url = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    path = next_url.removeprefix(ORIGIN)

    other = client.get(path, headers=tokens.headers(["nurse"], subject="someone-else"))
    altered = client.get(path[:-3] + "xyz", headers=clinician)
    mixed = client.get(path + "&family=Other", headers=clinician)

    for response in (other, altered, mixed):
        assert response.status_code == 400
        assert outcome_of(response)["issue"][0]["expression"] == ["_page"]


def test_post_search_takes_form_parameters(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    register_family(client, clinician, "Zebedee", 2)
    headers = {k: v for k, v in clinician.items() if k != "Content-Type"}

    response = client.post(
        "/fhir/Patient/_search",
        data={"family": "Zebedee", "birthdate": "ge1980-01-01", "_count": "500"},
        headers=headers,
    )

    assert response.status_code == 200
    assert response.json()["total"] == 2
    (search,) = upstream.seen("/chart/Patient/_search")
    assert json.loads(search.body) == {
        "family": ["Zebedee"],
        "birthdate": ["ge1980-01-01"],
        "count": 100,
        "offset": 0,
    }


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("family:exact=Zebedee", "family:exact"),
        ("address=Leith", "address"),
        ("birthdate=1984-02-30", "birthdate"),
        ("birthdate=around1984", "birthdate"),
        ("_count=-1", "_count"),
        ("_count=ten", "_count"),
    ],
)
def test_unknown_or_invalid_search_parameters_are_400(
    query: str, parameter: str, client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    response = client.get(f"/fhir/Patient?{query}", headers=clinician)

    assert response.status_code == 400
    issue = outcome_of(response)["issue"][0]
    assert issue["expression"] == [parameter]
    assert "Leith" not in response.text and "1984" not in response.text
    assert upstream.seen() == []


def test_search_form_must_be_form_encoded(client: TestClient, clinician: dict[str, str]) -> None:
    response = client.post("/fhir/Patient/_search", json={"family": "Z"}, headers=clinician)

    assert response.status_code == 415


# --- AllergyIntolerance -----------------------------------------------------------------


def test_allergy_create_read_and_search(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    patient_id = create_patient(client, clinician)["id"]

    created = client.post(
        "/fhir/AllergyIntolerance", json=fhir_allergy(patient_id), headers=clinician
    )
    upstream.chart_lags = True
    allergy_id = created.json()["id"]
    read = client.get(f"/fhir/AllergyIntolerance/{allergy_id}", headers=clinician)
    upstream.chart_lags = False
    found = client.get(f"/fhir/AllergyIntolerance?patient=Patient/{patient_id}", headers=clinician)

    assert created.status_code == 201
    assert created.headers["location"] == f"{BASE}/AllergyIntolerance/{allergy_id}/_history/1"
    (command,) = upstream.seen(f"/patients/{patient_id}/allergies")
    assert json.loads(command.body)["code"]["text"] == "Penicillin"
    assert read.status_code == 200
    assert read.json()["patient"] == {"reference": f"Patient/{patient_id}"}
    assert found.status_code == 200
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [allergy_id]
    (search,) = upstream.seen("/chart/AllergyIntolerance/_search")
    assert json.loads(search.body)["patient"] == [patient_id]


def test_an_allergy_of_an_unknown_patient_is_422(
    client: TestClient, clinician: dict[str, str]
) -> None:
    response = client.post(
        "/fhir/AllergyIntolerance", json=fhir_allergy("no-such-patient"), headers=clinician
    )

    assert response.status_code == 422
    assert outcome_of(response)["issue"][0]["expression"] == [
        "AllergyIntolerance.patient.reference"
    ]


def test_an_allergy_with_an_unknown_element_writes_nothing(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    response = client.post(
        "/fhir/AllergyIntolerance", json=fhir_allergy("p-1", sneaky=True), headers=clinician
    )

    assert response.status_code == 400
    assert outcome_of(response)["issue"][0]["expression"] == ["AllergyIntolerance.sneaky"]
    assert upstream.seen() == []


# --- upstream failures ------------------------------------------------------------------


def test_a_failing_service_is_502_without_details(
    client: TestClient, upstream: StandIn, clinician: dict[str, str]
) -> None:
    upstream.failing.add("/patients")

    response = client.post("/fhir/Patient", json=fhir_patient(), headers=clinician)

    assert response.status_code == 502
    issue = outcome_of(response)["issue"][0]
    assert issue["code"] == "exception"
    assert "boom" not in response.text


def test_an_unreachable_service_is_503_with_retry_after(
    make_client: Callable[..., TestClient], clinician: dict[str, str]
) -> None:
    client = make_client(projections_url=f"http://127.0.0.1:{free_port()}")

    response = client.get("/fhir/Patient?family=Zebedee", headers=clinician)

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert outcome_of(response)["issue"][0]["code"] == "transient"


# --- logs -------------------------------------------------------------------------------


def test_logs_carry_paths_but_no_query_strings_or_bodies(
    client: TestClient, clinician: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    create_patient(client, clinician)
    client.get("/fhir/Patient?family=Zebedee&birthdate=1984-02-29", headers=clinician)
    client.post("/fhir/Patient", json=fhir_patient(birthDate="1984-02-30"), headers=clinician)

    assert "GET /fhir/Patient 200" in caplog.text
    for phi in ("Zebedee", "1984-02-29", "1984-02-30", "MRN-1001", "family="):
        assert phi not in caplog.text
    assert not [
        r for r in caplog.records if r.name.startswith("httpx") and r.levelno < logging.WARNING
    ]


def test_a_service_that_drops_the_request_is_504_outcome_unknown(
    make_client: Callable[..., TestClient], clinician: dict[str, str]
) -> None:
    # a real listener that takes the request and hangs up without answering: the
    # write may or may not have happened, so the client must not be told 503
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def hang_up() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.recv(65536)
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        client = make_client(records_url=f"http://127.0.0.1:{port}")
        response = client.post("/fhir/Patient", json=fhir_patient(), headers=clinician)
    finally:
        listener.close()

    assert response.status_code == 504
    assert outcome_of(response)["issue"][0]["code"] == "timeout"
