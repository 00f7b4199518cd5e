"""Rules of the identity domain, without any store."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from identity.domain.errors import (
    InvalidOrganizationName,
    InvalidRoles,
    InvalidUsername,
    KeyAlreadyRetired,
    UserAlreadyDisabled,
    WeakPassword,
)
from identity.domain.login import LoginAttempt
from identity.domain.organization import Organization
from identity.domain.rules import check_password, check_username
from identity.domain.signing_key import KeyRing, SigningKey
from identity.domain.user import User
from identity.keys import generate_key

HASH = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def new_key(at: datetime = T0) -> SigningKey:
    material = generate_key()
    return SigningKey.activate(material.kid, material.private_key_pem, material.public_jwk, at)


# -- users ---------------------------------------------------------------------------


def test_usernames_are_canonical_and_their_id_ignores_case_and_spacing() -> None:
    assert check_username("  Dr.Who ") == "dr.who"
    assert User.create_id("Dr.Who") == User.create_id(" dr.who")
    assert User.create_id("dr.who") != User.create_id("dr.watson")


@pytest.mark.parametrize("bad", ["ab", "", "-abc", "abc-", "has space", "a" * 65, "naïve!", "x\n"])
def test_malformed_usernames_are_refused(bad: str) -> None:
    with pytest.raises(InvalidUsername):
        check_username(bad)


def test_a_registered_user_holds_canonical_roles_and_is_enabled() -> None:
    org = uuid4()
    user = User.register("Nurse.Joy", HASH, ["nurse", "physician", "nurse"], org)
    assert (user.username, user.roles, user.organization_id) == (
        "nurse.joy",
        ("nurse", "physician"),
        org,
    )
    assert user.id == User.create_id("nurse.joy")
    assert not user.disabled
    assert [type(e).__name__ for e in user.collect_events()] == ["Registered"]


@pytest.mark.parametrize("roles", [[], ["surgeon"], ["nurse", "root"]])
def test_unknown_or_missing_roles_are_refused(roles: list[str]) -> None:
    with pytest.raises(InvalidRoles):
        User.register("nurse.joy", HASH, roles)


def test_a_password_is_never_stored_where_a_hash_belongs() -> None:
    with pytest.raises(ValueError, match="Argon2id"):
        User.register("nurse.joy", "plain text password", ["nurse"])
    user = User.register("nurse.joy", HASH, ["nurse"])
    with pytest.raises(ValueError):
        user.rehash_password("hunter2hunter2")


def test_changing_to_the_same_roles_records_nothing() -> None:
    user = User.register("nurse.joy", HASH, ["nurse"])
    user.collect_events()
    user.change_roles(["nurse"])
    assert user.collect_events() == []
    user.change_roles(["nurse", "auditor"])
    (changed,) = user.collect_events()
    assert type(changed).__name__ == "RolesChanged"
    assert user.roles == ("auditor", "nurse")


def test_a_disabled_user_cannot_be_disabled_again() -> None:
    user = User.register("nurse.joy", HASH, ["nurse"])
    user.disable()
    assert user.disabled
    with pytest.raises(UserAlreadyDisabled):
        user.disable()


def test_the_password_policy_wants_length_but_not_absurd_length() -> None:
    check_password("x" * 12, 12)
    with pytest.raises(WeakPassword):
        check_password("x" * 11, 12)
    with pytest.raises(WeakPassword):
        check_password(" " * 20, 12)
    with pytest.raises(WeakPassword):
        check_password("x" * 1025, 12)


# -- organisations ---------------------------------------------------------------------


def test_organization_names_are_a_natural_key_regardless_of_case_and_spacing() -> None:
    clinic = Organization.register("  Demo   Clinic ")
    assert clinic.name == "Demo Clinic"
    assert clinic.id == Organization.create_id("demo clinic")


@pytest.mark.parametrize("bad", ["", "   ", "x" * 201, "bad\x00name"])
def test_blank_long_or_control_character_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidOrganizationName):
        Organization.register(bad)


# -- login attempts --------------------------------------------------------------------


def test_a_failed_login_carries_no_password_field_and_a_bounded_username() -> None:
    attempt = LoginAttempt.fail("X" * 500, "bad-password", client_address="192.0.2.1")
    (failed,) = attempt.collect_events()
    assert isinstance(failed, LoginAttempt.Failed)
    fields = {f.name for f in dataclasses.fields(failed)}
    assert not {name for name in fields if "pass" in name or "secret" in name}
    assert failed.username == "x" * 64
    assert (failed.reason, failed.client_address) == ("bad-password", "192.0.2.1")


def test_a_failure_reason_outside_the_catalogue_is_refused() -> None:
    with pytest.raises(ValueError):
        LoginAttempt.fail("alice", "forgot")  # type: ignore[arg-type]


def test_each_attempt_is_its_own_one_event_stream() -> None:
    user_id = uuid4()
    first = LoginAttempt.succeed("alice", user_id, "jti-1")
    second = LoginAttempt.succeed("alice", user_id, "jti-2")
    assert first.id != second.id
    assert first.succeeded and first.version == 1


# -- signing keys ---------------------------------------------------------------------


def test_a_signing_key_refuses_a_public_jwk_with_the_private_exponent() -> None:
    material = generate_key()
    with pytest.raises(ValueError):
        SigningKey.activate(
            material.kid, material.private_key_pem, {**material.public_jwk, "d": "secret"}, T0
        )


def test_a_retired_key_cannot_be_retired_again() -> None:
    key = new_key()
    key.retire(T0)
    with pytest.raises(KeyAlreadyRetired):
        key.retire(T0)


def test_rotation_publishes_the_retired_key_for_exactly_its_grace_period() -> None:
    old, new = new_key(), new_key()
    ring = KeyRing.start(old)
    grace = timedelta(seconds=960)
    old.retire(T0)
    ring.rotate(new, old, T0)
    assert ring.current_kid == new.kid

    def kids(at: datetime) -> list[str]:
        return [k["kid"] for k in ring.published(at, grace)]

    assert kids(T0) == [new.kid, old.kid]
    assert kids(T0 + grace - timedelta(seconds=1)) == [new.kid, old.kid]
    assert kids(T0 + grace) == [new.kid]


def test_rotation_must_retire_the_current_key() -> None:
    old, new = new_key(), new_key()
    ring = KeyRing.start(old)
    with pytest.raises(ValueError):
        ring.rotate(new, old, T0)  # old is still active
    stranger = new_key()
    stranger.retire(T0)
    with pytest.raises(ValueError):
        ring.rotate(new, stranger, T0)


def test_published_keys_never_carry_private_material() -> None:
    ring = KeyRing.start(new_key())
    for jwk in ring.published(T0, timedelta(seconds=1)):
        assert "d" not in jwk
        assert jwk["alg"] == "ES256" and jwk["use"] == "sig"
