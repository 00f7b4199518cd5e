"""The edge, through the ASGI app: tokens, permissions, rate limits, body limits, routes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from ehr_events.security import TokenVerifier
from ehr_events.testing import TokenFactory
from gateway.policy import ROUTES, Action, PatientFrom, RouteTable, patient_id_from_reference
from gateway.ratelimit import RateLimiter

from .builders import fhir_allergy, fhir_patient, forged_tokens
from .standin import StandIn

FHIR = "application/fhir+json"
PATIENT_ID = "0b5c4c8e-4a2e-4c55-9d0a-7d1b2f3c4d5e"

#: Protected routes, one request each: method, URL, JSON body.
PROTECTED = [
    ("GET", f"/fhir/Patient/{PATIENT_ID}", None),
    ("GET", "/fhir/Patient?family=Zebedee", None),
    ("PUT", f"/fhir/Patient/{PATIENT_ID}", fhir_patient(id=PATIENT_ID)),
    ("POST", "/fhir/AllergyIntolerance", fhir_allergy(PATIENT_ID)),
    ("GET", "/api/audit?patient_id=x", None),
]


def send(client: TestClient, method: str, url: str, body: dict | None, **headers: str):
    return client.request(method, url, json=body, headers=headers)


# --- authentication ---------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(forged_tokens(TokenFactory())))
def test_every_forged_or_missing_token_is_refused_on_every_route(
    case: str, client: TestClient, upstream: StandIn, tokens: TokenFactory
) -> None:
    authorization = forged_tokens(tokens)[case]
    headers = {"If-Match": 'W/"1"'}
    if authorization is not None:
        headers["Authorization"] = authorization

    for method, url, body in PROTECTED:
        response = send(client, method, url, body, **headers)

        assert response.status_code == 401, (case, url, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        if url.startswith("/fhir"):
            assert response.headers["content-type"].startswith(FHIR)
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["code"] == "login"
        else:
            assert response.headers["content-type"].startswith("application/problem+json")
    # nothing reached a service
    assert upstream.seen() == []


def test_invalid_token_challenge_names_the_failed_check(
    client: TestClient, tokens: TokenFactory
) -> None:
    response = client.get(
        f"/fhir/Patient/{PATIENT_ID}",
        headers={"Authorization": f"Bearer {tokens.token(ttl=-120)}"},
    )

    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert "expired" in challenge
    assert "expired" in response.json()["issue"][0]["diagnostics"]


def test_a_rotated_signing_key_is_fetched_when_its_kid_first_appears(
    make_client: Callable[..., TestClient], upstream: StandIn, tokens: TokenFactory
) -> None:
    verifier = TokenVerifier(
        f"{upstream.url}/auth/jwks", tokens.issuer, tokens.audience, min_refetch_seconds=0
    )
    client = make_client(verifier=verifier)
    assert client.get("/fhir/Patient?family=A", headers=tokens.headers()).status_code == 200
    # identity rotates: a new key is published next to the old one
    rotated = TokenFactory(tokens.issuer, tokens.audience)
    upstream.jwks = {"keys": tokens.jwks()["keys"] + rotated.jwks()["keys"]}

    response = client.get("/fhir/Patient?family=A", headers=rotated.headers())

    assert response.status_code == 200
    key_fetches = [r for r in upstream.requests if r.path == "/auth/jwks"]
    assert len(key_fetches) == 2


# --- permissions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/fhir/AllergyIntolerance/a-1", None),
        ("GET", f"/fhir/AllergyIntolerance?patient=Patient/{PATIENT_ID}", None),
        ("POST", "/fhir/AllergyIntolerance", fhir_allergy(PATIENT_ID)),
    ],
)
def test_front_desk_may_not_touch_allergies(
    method: str,
    url: str,
    body: dict | None,
    client: TestClient,
    upstream: StandIn,
    tokens: TokenFactory,
) -> None:
    response = send(client, method, url, body, **tokens.headers(["frontdesk"]))

    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"
    assert upstream.seen() == []


def test_front_desk_may_search_patients(
    client: TestClient, upstream: StandIn, tokens: TokenFactory
) -> None:
    response = client.get("/fhir/Patient?family=Z", headers=tokens.headers(["frontdesk"]))

    assert response.status_code == 200
    assert [r.path for r in upstream.seen()] == ["/chart/Patient/_search"]


def test_only_auditors_read_the_audit_log(
    client: TestClient, upstream: StandIn, tokens: TokenFactory
) -> None:
    refused = client.get("/api/audit", headers=tokens.headers(["physician"]))
    token = tokens.token(["auditor"])
    allowed = client.get(
        "/api/audit?patient_id=p-1&limit=5", headers={"Authorization": f"Bearer {token}"}
    )

    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert allowed.status_code == 200
    (forwarded,) = upstream.seen("/audit")
    assert forwarded.headers["authorization"] == f"Bearer {token}"
    assert forwarded.query == "patient_id=p-1&limit=5"


def test_unknown_audit_parameters_are_refused(client: TestClient, tokens: TokenFactory) -> None:
    response = client.get("/api/audit?everything=yes", headers=tokens.headers(["auditor"]))

    assert response.status_code == 400


def test_patient_role_has_no_clinical_access_through_the_edge(
    client: TestClient, tokens: TokenFactory
) -> None:
    response = client.get(f"/fhir/Patient/{PATIENT_ID}", headers=tokens.headers(["patient"]))

    assert response.status_code == 403


# --- routes -----------------------------------------------------------------------------


def test_every_app_route_has_exactly_one_rule_and_every_rule_a_route(client: TestClient) -> None:
    served = {
        (method, context.path)
        for context in iter_route_contexts(client.app.routes)
        for method in (getattr(context.original_route, "methods", None) or ())
    }
    ruled = {(rule.method, rule.template) for rule in ROUTES}

    assert served == ruled
    assert len(ruled) == len(ROUTES)


def test_rules_name_the_patient_where_the_route_knows_it() -> None:
    table = RouteTable()

    read = table.match("GET", "/fhir/Patient/abc")
    search = table.match("POST", "/fhir/Patient/_search")
    allergies = table.match("GET", "/fhir/AllergyIntolerance")

    assert read is not None and read.rule.patient is PatientFrom.path
    assert read.rule.patient_id(read.path_params, {}) == "abc"
    assert search is not None and search.rule.action is Action.search
    assert search.path_params == {}
    assert allergies is not None
    assert allergies.rule.patient_id({}, {"patient": "Patient/p-7"}) == "p-7"
    assert patient_id_from_reference("Group/g-1") is None


def test_unrouted_paths_are_404_and_wrong_methods_405_without_a_token(
    client: TestClient, upstream: StandIn
) -> None:
    assert client.get("/fhir/Observation").status_code == 404
    assert client.get("/docs").status_code == 404
    assert client.delete(f"/fhir/Patient/{PATIENT_ID}").status_code == 405
    assert client.get("/fhir/Observation").json()["resourceType"] == "OperationOutcome"
    assert upstream.seen() == []


def test_public_routes_need_no_token(client: TestClient, upstream: StandIn) -> None:
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert client.get("/fhir/metadata").status_code == 200
    jwks = client.get("/auth/jwks")
    assert jwks.status_code == 200
    assert jwks.json() == upstream.jwks


def test_token_requests_are_proxied_with_the_client_address(
    client: TestClient, upstream: StandIn
) -> None:
    def login(username: str, password: str, **kw: object):
        form = {"grant_type": "password", "username": username, "password": password}
        return client.post("/auth/token", data=form, **kw)

    issued = login("alice", "right", auth=("portal", "client-secret"))
    refused = login("alice", "wrong")
    throttled = login("throttled", "x")

    assert issued.status_code == 200
    assert issued.json()["access_token"] == "issued"
    assert issued.headers["cache-control"] == "no-store"
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_grant"}
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "7"
    forwarded = upstream.seen("/auth/token")[0]
    assert forwarded.headers["x-forwarded-for"] == "testclient"
    assert forwarded.headers["authorization"].startswith("Basic ")
    assert b"password=right" in forwarded.body


# --- rate limits ------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])

    assert limiter.check("a").allowed and limiter.check("a").allowed
    refused = limiter.check("a")
    again = limiter.check("a")
    now[0] = 0.5
    refilled = limiter.check("a")

    assert not refused.allowed and refused.retry_after == 1 and refused.first_refusal
    assert not again.allowed and not again.first_refusal
    assert refilled.allowed
    assert limiter.check("b").allowed


def test_rate_limiter_forgets_the_oldest_keys_beyond_its_bound() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=3)
    for key in "abcde":
        limiter.check(key)

    assert len(limiter) == 3


def test_one_caller_over_its_limit_gets_429_with_retry_after(
    make_client: Callable[..., TestClient], tokens: TokenFactory
) -> None:
    client = make_client(rate_per_subject=0.01, burst_per_subject=2)
    noisy = tokens.headers(subject="noisy")

    statuses = [client.get("/fhir/Patient?family=A", headers=noisy).status_code for _ in range(3)]
    limited = client.get("/fhir/Patient?family=A", headers=noisy)
    other = client.get("/fhir/Patient?family=A", headers=tokens.headers(subject="quiet"))

    assert statuses == [200, 200, 429]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["issue"][0]["code"] == "throttled"
    assert other.status_code == 200


def test_one_address_over_its_limit_gets_429_even_on_public_routes(
    make_client: Callable[..., TestClient], tokens: TokenFactory
) -> None:
    client = make_client(rate_per_address=0.01, burst_per_address=3)

    first = [client.get("/auth/jwks").status_code for _ in range(3)]
    public = client.get("/auth/jwks")
    protected = client.get("/fhir/Patient?family=A", headers=tokens.headers(subject="fresh"))

    assert first == [200, 200, 200]
    assert public.status_code == 429
    assert public.headers["content-type"].startswith("application/problem+json")
    assert "retry-after" in public.headers
    assert protected.status_code == 429


# --- bodies -----------------------------------------------------------------------------


def test_bodies_over_one_mebibyte_are_413_before_anything_is_forwarded(
    client: TestClient, upstream: StandIn, tokens: TokenFactory
) -> None:
    huge = b'{"resourceType": "Patient", "text": "' + b"x" * (1024 * 1024) + b'"}'
    headers = {**tokens.headers(), "Content-Type": FHIR}

    fhir = client.post("/fhir/Patient", content=huge, headers=headers)
    login = client.post("/auth/token", content=huge, headers={"Content-Type": "text/plain"})

    assert fhir.status_code == 413
    assert fhir.json()["resourceType"] == "OperationOutcome"
    assert fhir.json()["issue"][0]["code"] == "too-costly"
    assert login.status_code == 413
    assert login.headers["content-type"].startswith("application/problem+json")
    assert upstream.seen() == []


def test_streamed_bodies_over_the_limit_are_413_too(
    client: TestClient, upstream: StandIn, tokens: TokenFactory
) -> None:
    def chunks():
        yield b'{"resourceType": "Patient", "text": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = client.post(
        "/fhir/Patient", content=chunks(), headers={**tokens.headers(), "Content-Type": FHIR}
    )

    assert response.status_code == 413
    assert response.json()["resourceType"] == "OperationOutcome"
    assert upstream.seen() == []


def test_signing_keys_are_fetched_once_and_cached(
    client: TestClient, upstream: StandIn, tokens: TokenFactory
) -> None:
    for _ in range(5):
        assert client.get("/fhir/Patient?family=A", headers=tokens.headers()).status_code == 200

    assert len([r for r in upstream.requests if r.path == "/auth/jwks"]) == 1


def test_a_malformed_key_set_refuses_the_request_without_a_crash(
    make_client: Callable[..., TestClient], upstream: StandIn, tokens: TokenFactory
) -> None:
    upstream.jwks = {"keys": "not a list"}
    client = make_client()

    response = client.get("/fhir/Patient?family=A", headers=tokens.headers())

    # 503 while the library lets PyJWKSetError escape the verifier, 401 once it does not
    assert response.status_code in (401, 503)
    assert response.json()["resourceType"] == "OperationOutcome"
