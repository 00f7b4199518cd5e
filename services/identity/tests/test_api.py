"""The HTTP contract of the identity service, through its ASGI app."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from ehr_events.config import DefaultSecretError
from ehr_events.testing import TokenFactory, random_cipher_key
from identity.application import IdentityApplication
from identity.config import IdentitySettings
from identity.domain.login import LoginAttempt
from identity.domain.user import User
from identity.main import create_app
from identity.relay import translate
from identity.testing import FAST_ARGON2, STRONG_PASSWORD, identity_settings, stored_events, verify

CANARY = "Canary-Wrong-Password-5521"
PEER = ("203.0.113.10", 50000)


@pytest.fixture
def settings(tmp_path: Path) -> IdentitySettings:
    return identity_settings(tmp_path)


@pytest.fixture
def client(settings: IdentitySettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), client=PEER) as client:
        yield client


def identity_of(client: TestClient) -> IdentityApplication:
    return client.app.state.identity  # type: ignore[attr-defined]


def register(client: TestClient, username: str, roles: list[str], **kw: Any) -> str:
    return str(identity_of(client).register_user(username, STRONG_PASSWORD, roles, **kw).id)


def password_grant(client: TestClient, username: str, password: str, **kw: Any) -> Any:
    return client.post(
        "/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
        **kw,
    )


def bearer(client: TestClient, username: str) -> dict[str, str]:
    response = password_grant(client, username, STRONG_PASSWORD)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def verifier_from_jwks(client: TestClient, settings: IdentitySettings) -> Any:
    from ehr_events.security import TokenVerifier

    verifier = TokenVerifier(
        "http://127.0.0.1:9/unused", settings.token_issuer, settings.token_audience
    )
    verifier.set_jwks(client.get("/auth/jwks").json())
    verifier.cache_seconds = 10**9
    return verifier


def failures(client: TestClient) -> list[LoginAttempt.Failed]:
    return [
        e for _, _, e in stored_events(identity_of(client)) if isinstance(e, LoginAttempt.Failed)
    ]


# -- POST /auth/token ---------------------------------------------------------------------


def test_a_password_grant_returns_a_bearer_token_the_shared_verifier_accepts(
    client: TestClient, settings: IdentitySettings
) -> None:
    clinic = identity_of(client).register_organization("Demo Clinic")
    user_id = register(client, "alice", ["physician", "nurse"], organization_id=clinic.id)

    response = password_grant(client, "alice", STRONG_PASSWORD)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert set(body) == {"access_token", "token_type", "expires_in"}
    token = body["access_token"]
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "ES256" and header["kid"]
    assert claims["iss"] == settings.token_issuer and claims["aud"] == settings.token_audience
    assert claims["exp"] - claims["iat"] == 900 and claims["nbf"] == claims["iat"]
    assert len(claims["jti"]) == 32 and int(claims["jti"], 16) >= 0
    assert claims["roles"] == ["nurse", "physician"]
    assert claims["org"] == str(clinic.id)
    assert claims["preferred_username"] == "alice"

    principal = verify(verifier_from_jwks(client, settings), token)
    assert principal.subject == user_id
    assert principal.roles == {"physician", "nurse"}


def test_a_shorter_ttl_is_honoured(tmp_path: Path) -> None:
    with TestClient(create_app(identity_settings(tmp_path, token_ttl_seconds=60))) as client:
        register(client, "alice", ["nurse"])
        body = password_grant(client, "alice", STRONG_PASSWORD).json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert body["expires_in"] == 60 and claims["exp"] - claims["iat"] == 60


def test_a_wrong_password_is_invalid_grant_and_recorded_without_the_password(
    client: TestClient, settings: IdentitySettings
) -> None:
    user_id = register(client, "alice", ["nurse"])

    response = password_grant(client, "alice", CANARY)

    assert response.status_code == 400
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "The username or password is incorrect.",
    }
    (failed,) = failures(client)
    assert (failed.username, str(failed.user_id), failed.reason, failed.client_address) == (
        "alice",
        user_id,
        "bad-password",
        PEER[0],
    )
    # nowhere in the store: not in the raw bytes on disk, not in any decoded event
    for path in (settings.var_dir / "identity").glob("events.sqlite3*"):
        assert CANARY.encode() not in path.read_bytes()
    for raw, plain, event in stored_events(identity_of(client)):
        assert CANARY.encode() not in raw and CANARY.encode() not in plain
        integration = translate(event)
        if integration is not None:
            assert CANARY not in integration.model_dump_json()


def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(client: TestClient) -> None:
    register(client, "alice", ["nurse"])
    wrong = password_grant(client, "alice", CANARY)
    unknown = password_grant(client, "mallory", CANARY)
    assert (unknown.status_code, unknown.json()) == (wrong.status_code, wrong.json())
    assert [f.reason for f in failures(client)] == ["bad-password", "unknown-user"]


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "alice"}, "invalid_request"),
        ({"grant_type": "password", "password": STRONG_PASSWORD}, "invalid_request"),
        ({"grant_type": "password", "username": "a" * 300, "password": "x"}, "invalid_request"),
    ],
)
def test_malformed_token_requests_get_oauth_errors(
    client: TestClient, form: dict[str, str], error: str
) -> None:
    response = client.post("/auth/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert failures(client) == []


def test_a_json_body_is_not_a_token_request(client: TestClient) -> None:
    register(client, "alice", ["nurse"])
    response = client.post(
        "/auth/token",
        json={"grant_type": "password", "username": "alice", "password": STRONG_PASSWORD},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


# -- throttling --------------------------------------------------------------------------


def test_an_account_is_throttled_after_five_failures_even_with_the_right_password(
    client: TestClient, settings: IdentitySettings
) -> None:
    register(client, "alice", ["nurse"])
    for _ in range(settings.throttle_account_failures):
        assert password_grant(client, "alice", CANARY).status_code == 400

    response = password_grant(client, "alice", STRONG_PASSWORD)

    assert response.status_code == 429
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= settings.throttle_window_seconds
    assert response.json()["error"] == "temporarily_unavailable"
    assert failures(client)[-1].reason == "throttled"
    # another account from the same address is not affected
    register(client, "bob", ["nurse"])
    assert password_grant(client, "bob", STRONG_PASSWORD).status_code == 200


def test_an_address_is_throttled_after_twenty_failures_across_accounts(
    client: TestClient, settings: IdentitySettings
) -> None:
    register(client, "alice", ["nurse"])
    for n in range(settings.throttle_address_failures):
        assert password_grant(client, f"user{n:02d}", CANARY).status_code == 400

    response = password_grant(client, "alice", STRONG_PASSWORD)

    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
    last = failures(client)[-1]
    assert (last.reason, last.username, last.client_address) == ("throttled", "alice", PEER[0])
    # the same account from elsewhere still signs in
    elsewhere = TestClient(client.app, client=("198.51.100.20", 40000))
    assert password_grant(elsewhere, "alice", STRONG_PASSWORD).status_code == 200


def test_the_gateway_on_loopback_is_believed_about_the_client_address(
    client: TestClient, settings: IdentitySettings
) -> None:
    register(client, "alice", ["nurse"])
    # a second client on the same app, without its own lifespan
    gateway = TestClient(client.app, client=("127.0.0.1", 40000))
    forwarded = {"X-Forwarded-For": "198.51.100.7"}
    for n in range(settings.throttle_address_failures):
        assert password_grant(gateway, f"user{n:02d}", CANARY, headers=forwarded).status_code == 400
    throttled = password_grant(gateway, "alice", STRONG_PASSWORD, headers=forwarded)
    other = password_grant(
        gateway, "alice", STRONG_PASSWORD, headers={"X-Forwarded-For": "198.51.100.8"}
    )
    assert throttled.status_code == 429
    assert other.status_code == 200
    assert {f.client_address for f in failures(client)} == {"198.51.100.7"}


def test_an_untrusted_peer_cannot_pick_its_address_with_x_forwarded_for(
    client: TestClient,
) -> None:
    register(client, "alice", ["nurse"])
    password_grant(client, "alice", CANARY, headers={"X-Forwarded-For": "192.0.2.99"})
    assert [f.client_address for f in failures(client)] == [PEER[0]]


# -- GET /auth/jwks ------------------------------------------------------------------------


def test_the_jwks_holds_the_public_signing_key_only(client: TestClient) -> None:
    register(client, "alice", ["nurse"])
    token = password_grant(client, "alice", STRONG_PASSWORD).json()["access_token"]

    response = client.get("/auth/jwks")

    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    assert key["kid"] == jwt.get_unverified_header(token)["kid"]
    # the kid is the RFC 7638 thumbprint of the key
    x = base64.urlsafe_b64decode(key["x"] + "==")
    assert len(x) == 32


def test_rotating_through_the_api_needs_an_admin_and_keeps_both_keys_published(
    client: TestClient, settings: IdentitySettings
) -> None:
    register(client, "root", ["admin"])
    register(client, "alice", ["nurse"])
    old_token = password_grant(client, "alice", STRONG_PASSWORD).json()["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    assert client.post("/auth/keys/rotate", headers=bearer(client, "alice")).status_code == 403
    response = client.post("/auth/keys/rotate", headers=bearer(client, "root"))

    assert response.status_code == 200
    assert response.json()["retired_kid"] == old_kid
    new_kid = response.json()["kid"]
    assert [k["kid"] for k in client.get("/auth/jwks").json()["keys"]] == [new_kid, old_kid]
    new_token = password_grant(client, "alice", STRONG_PASSWORD).json()["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    verifier = verifier_from_jwks(client, settings)
    verify(verifier, old_token)
    verify(verifier, new_token)
    # and the service's own verifier learns the new key by itself
    assert (
        client.get("/organizations/" + "0" * 32, headers=bearer(client, "root")).status_code == 404
    )


# -- admin routes --------------------------------------------------------------------------


def test_admin_routes_want_a_valid_token_of_role_admin(client: TestClient) -> None:
    register(client, "alice", ["nurse"])
    body = {"username": "bob", "password": STRONG_PASSWORD, "roles": ["nurse"]}

    anonymous = client.post("/users", json=body)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")

    assert client.post("/users", json=body, headers=bearer(client, "alice")).status_code == 403

    foreign = TokenFactory().headers(["admin"])  # right claims, wrong signing key
    assert client.post("/users", json=body, headers=foreign).status_code == 401
    assert client.post("/organizations", json={"name": "X"}).status_code == 401
    assert client.get("/users/" + "0" * 32).status_code == 401
    assert identity_of(client).find_user("bob") is None


def test_an_admin_registers_organizations_and_users(client: TestClient) -> None:
    root_id = register(client, "root", ["admin"])
    admin = bearer(client, "root")

    created_org = client.post("/organizations", json={"name": "North Clinic"}, headers=admin)
    assert created_org.status_code == 201
    org = created_org.json()
    assert (
        client.post("/organizations", json={"name": "north clinic"}, headers=admin).status_code
        == 409
    )
    assert client.get(f"/organizations/{org['id']}", headers=admin).json() == org

    created = client.post(
        "/users",
        json={
            "username": "Bob",
            "password": STRONG_PASSWORD,
            "roles": ["pharmacist"],
            "organization": "North Clinic",
        },
        headers=admin,
    )
    assert created.status_code == 201
    user = created.json()
    assert user == {
        "id": user["id"],
        "username": "bob",
        "roles": ["pharmacist"],
        "organization_id": org["id"],
        "disabled": False,
    }
    assert created.headers["location"] == f"/users/{user['id']}"
    assert client.get(f"/users/{user['id']}", headers=admin).json() == user
    assert "argon2" not in created.text

    # bob signs in, and the registration carried the admin as actor
    assert password_grant(client, "bob", STRONG_PASSWORD).status_code == 200
    registered = [
        e for _, _, e in stored_events(identity_of(client)) if isinstance(e, User.Registered)
    ]
    assert [(e.username, e.actor) for e in registered if e.actor] == [
        ("bob", {"sub": root_id, "role": "admin"})
    ]


def test_duplicate_and_invalid_users_are_problems_that_echo_nothing(client: TestClient) -> None:
    register(client, "root", ["admin"])
    admin = bearer(client, "root")
    body = {"username": "bob", "password": STRONG_PASSWORD, "roles": ["nurse"]}
    assert client.post("/users", json=body, headers=admin).status_code == 201

    duplicate = client.post("/users", json={**body, "username": "BOB"}, headers=admin)
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"] == "application/problem+json"

    weak = client.post(
        "/users", json={**body, "username": "carol", "password": "Sh0rt!"}, headers=admin
    )
    assert weak.status_code == 422 and "Sh0rt!" not in weak.text
    assert weak.json()["errors"][0]["field"] == "password"

    bad_role = client.post(
        "/users", json={**body, "username": "dave", "roles": ["root"]}, headers=admin
    )
    assert bad_role.status_code == 422 and STRONG_PASSWORD not in bad_role.text

    nowhere = client.post(
        "/users", json={**body, "username": "erin", "organization": "Nowhere"}, headers=admin
    )
    assert nowhere.status_code == 422
    assert client.get("/users/" + "0" * 32, headers=admin).status_code == 404


def test_a_disabled_user_can_no_longer_sign_in(client: TestClient) -> None:
    register(client, "root", ["admin"])
    user_id = register(client, "alice", ["nurse"])
    admin = bearer(client, "root")

    changed = client.put(f"/users/{user_id}/roles", json={"roles": ["auditor"]}, headers=admin)
    assert changed.json()["roles"] == ["auditor"]
    assert client.post(f"/users/{user_id}/disable", headers=admin).json()["disabled"] is True
    assert client.post(f"/users/{user_id}/disable", headers=admin).status_code == 409

    assert password_grant(client, "alice", STRONG_PASSWORD).json()["error"] == "invalid_grant"
    assert failures(client)[-1].reason == "disabled"


# -- settings and start-up -------------------------------------------------------------------


def test_demo_seeding_is_refused_outside_development(tmp_path: Path) -> None:
    for profile in ("production", "test"):
        with pytest.raises(ValidationError, match="EHR_SEED_DEMO_USERS"):
            IdentitySettings(profile=profile, var_dir=tmp_path, cipher_key=random_cipher_key())
    # settings built without validation are refused by the app as well
    unchecked = IdentitySettings.model_construct(
        **{
            **identity_settings(tmp_path).model_dump(),
            "profile": "production",
            "seed_demo_users": True,
        }
    )
    with pytest.raises(DefaultSecretError):
        create_app(unchecked)
    # switched off, production starts
    production = IdentitySettings(
        profile="production",
        var_dir=tmp_path,
        database_url="",
        cipher_key=random_cipher_key(),
        seed_demo_users=False,
        **FAST_ARGON2,
    )
    assert create_app(production).state.identity.find_user("admin") is None


def test_tokens_never_live_longer_than_fifteen_minutes(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="token_ttl_seconds"):
        identity_settings(tmp_path, token_ttl_seconds=901)


def test_development_start_up_seeds_the_demo_users(tmp_path: Path) -> None:
    settings = IdentitySettings(var_dir=tmp_path, database_url="", **FAST_ARGON2)
    with TestClient(create_app(settings)) as client:
        for role in (
            "physician",
            "nurse",
            "pharmacist",
            "frontdesk",
            "biller",
            "labtech",
            "auditor",
            "admin",
        ):
            response = password_grant(client, role, "demo")
            assert response.status_code == 200, role
            claims = jwt.decode(
                response.json()["access_token"], options={"verify_signature": False}
            )
            assert claims["roles"] == [role] and claims["org"]
    # a restart does not seed twice
    again = create_app(settings).state.identity
    registered = [e for _, _, e in stored_events(again) if type(e).__name__ == "Registered"]
    assert len(registered) == 9  # eight users and the clinic


def test_health_routes_answer(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    assert json.loads(client.get("/health/ready").text) == {"status": "ok"}
