"""The identity application on the in-memory store, then on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from ehr_events.config import Profile
from ehr_events.security import InvalidToken
from identity.application import IdentityApplication
from identity.config import IdentitySettings
from identity.domain.errors import (
    LoginRefused,
    LoginThrottled,
    OrganizationNameTaken,
    UnknownOrganization,
    UsernameTaken,
    UserNotFound,
    WeakPassword,
)
from identity.domain.login import LoginAttempt
from identity.domain.signing_key import SigningKey
from identity.domain.user import User
from identity.keys import generate_key
from identity.passwords import Passwords
from identity.seed import DEMO_PASSWORD, DEMO_ROLES, seed_demo_users
from identity.testing import (
    IN_MEMORY,
    STRONG_PASSWORD,
    Clock,
    drop_schema,
    identity_settings,
    postgres_settings,
    stored_events,
    verifier_for,
    verify,
)

CANARY = "Canary-Password-Never-Stored-7731"


class TestIdentityInMemory:
    #: Whether a second application instance sees the same store.
    shares_store = False

    @pytest.fixture
    def settings(self, tmp_path: Path) -> IdentitySettings:
        return identity_settings(tmp_path)

    @pytest.fixture
    def env(self) -> dict[str, str]:
        return IN_MEMORY

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    def app(
        self, settings: IdentitySettings, env: dict[str, str], clock: Clock
    ) -> Iterator[IdentityApplication]:
        app = IdentityApplication(settings, clock=clock, env=env)
        yield app
        app.close()

    def another_app(self, app: IdentityApplication) -> IdentityApplication:
        return IdentityApplication(app.settings, clock=app.clock, env=self.env_of(app))

    @staticmethod
    def env_of(app: IdentityApplication) -> dict[str, str]:
        return {"PERSISTENCE_MODULE": app.env["PERSISTENCE_MODULE"]}

    # -- users and organisations ------------------------------------------------------

    def test_a_registered_user_is_read_back_with_only_a_hash(
        self, app: IdentityApplication
    ) -> None:
        clinic = app.register_organization("Demo Clinic")
        user = app.register_user("Alice", STRONG_PASSWORD, ["physician"], clinic.id)
        stored = app.get_user(user.id)
        assert (stored.username, stored.roles, stored.organization_id) == (
            "alice",
            ("physician",),
            clinic.id,
        )
        assert stored.password_hash.startswith("$argon2id$")
        assert STRONG_PASSWORD not in stored.password_hash
        assert app.find_user("ALICE") == stored

    def test_a_duplicate_username_is_refused_by_the_store(self, app: IdentityApplication) -> None:
        app.register_user("alice", STRONG_PASSWORD, ["nurse"])
        with pytest.raises(UsernameTaken):
            app.register_user(" Alice ", STRONG_PASSWORD + "!", ["admin"])
        # the store itself refuses a second "created" event for the natural key
        with pytest.raises(IntegrityError):
            app.save(User.register("alice", app.passwords.hash("x"), ["nurse"]))
        stored = app.find_user("alice")
        assert stored is not None and stored.roles == ("nurse",)

    def test_a_duplicate_organization_name_is_refused(self, app: IdentityApplication) -> None:
        app.register_organization("Demo Clinic")
        with pytest.raises(OrganizationNameTaken):
            app.register_organization("demo  CLINIC")

    def test_a_user_cannot_join_an_organization_that_does_not_exist(
        self, app: IdentityApplication
    ) -> None:
        with pytest.raises(UnknownOrganization):
            app.resolve_organization("Nowhere Hospital")
        clinic = app.register_organization("Demo Clinic")
        assert app.resolve_organization("demo clinic") == clinic.id
        assert app.resolve_organization(str(clinic.id)) == clinic.id

    def test_a_weak_password_is_refused_before_anything_is_stored(
        self, app: IdentityApplication
    ) -> None:
        with pytest.raises(WeakPassword):
            app.register_user("alice", "short", ["nurse"])
        assert app.find_user("alice") is None

    def test_an_unknown_user_id_is_not_found(self, app: IdentityApplication) -> None:
        clinic = app.register_organization("Demo Clinic")
        with pytest.raises(UserNotFound):
            app.get_user(clinic.id)  # an id of another kind of aggregate

    # -- logins -------------------------------------------------------------------------

    def test_the_right_password_earns_a_token_the_shared_verifier_accepts(
        self, app: IdentityApplication
    ) -> None:
        app.ensure_signing_key()
        clinic = app.register_organization("Demo Clinic")
        user = app.register_user("alice", STRONG_PASSWORD, ["physician", "auditor"], clinic.id)
        issued = app.login("Alice", STRONG_PASSWORD, "192.0.2.1")
        principal = verify(verifier_for(app), issued.access_token)
        assert principal.subject == str(user.id)
        assert principal.roles == {"physician", "auditor"}
        assert principal.organization_id == str(clinic.id)
        assert principal.username == "alice"
        assert principal.token_id == issued.token_id
        succeeded = [e for _, _, e in stored_events(app) if isinstance(e, LoginAttempt.Succeeded)]
        assert [(e.user_id, e.token_id, e.client_address) for e in succeeded] == [
            (user.id, issued.token_id, "192.0.2.1")
        ]

    def test_wrong_passwords_and_unknown_users_are_refused_and_recorded(
        self, app: IdentityApplication
    ) -> None:
        app.ensure_signing_key()
        user = app.register_user("alice", STRONG_PASSWORD, ["nurse"])
        with pytest.raises(LoginRefused) as wrong:
            app.login("alice", CANARY, "192.0.2.1")
        with pytest.raises(LoginRefused) as unknown:
            app.login("mallory", CANARY, "192.0.2.1")
        assert (wrong.value.reason, unknown.value.reason) == ("bad-password", "unknown-user")
        failed = [e for _, _, e in stored_events(app) if isinstance(e, LoginAttempt.Failed)]
        assert [(e.username, e.user_id, e.reason) for e in failed] == [
            ("alice", user.id, "bad-password"),
            ("mallory", None, "unknown-user"),
        ]
        for raw, plain, _ in stored_events(app):
            assert CANARY.encode() not in raw
            assert CANARY.encode() not in plain

    def test_a_disabled_user_gets_no_token_even_with_the_right_password(
        self, app: IdentityApplication
    ) -> None:
        app.ensure_signing_key()
        user = app.register_user("alice", STRONG_PASSWORD, ["nurse"])
        app.disable_user(user.id, actor={"sub": "admin-1"})
        with pytest.raises(LoginRefused) as refused:
            app.login("alice", STRONG_PASSWORD, None)
        assert refused.value.reason == "disabled"

    def test_too_many_failures_throttle_the_account_without_checking_the_password(
        self, app: IdentityApplication, clock: Clock
    ) -> None:
        app.ensure_signing_key()
        app.register_user("alice", STRONG_PASSWORD, ["nurse"])
        for _ in range(app.settings.throttle_account_failures):
            with pytest.raises(LoginRefused):
                app.login("alice", "wrong password!", "192.0.2.1")
        with pytest.raises(LoginThrottled) as throttled:
            app.login("alice", STRONG_PASSWORD, "192.0.2.1")  # even the right password
        assert 0 < throttled.value.retry_after <= app.settings.throttle_window_seconds
        last = [e for _, _, e in stored_events(app) if isinstance(e, LoginAttempt.Failed)][-1]
        assert (last.reason, last.user_id) == ("throttled", User.create_id("alice"))
        # once the window has moved past the failures, the right password works again
        clock.advance(app.settings.throttle_window_seconds)
        assert app.login("alice", STRONG_PASSWORD, "192.0.2.1").access_token

    def test_a_login_rehashes_a_password_hashed_with_old_parameters(
        self, app: IdentityApplication
    ) -> None:
        app.ensure_signing_key()
        user = app.register_user("alice", STRONG_PASSWORD, ["nurse"])
        assert "t=1" in user.password_hash
        app.passwords = Passwords(time_cost=2, memory_cost=64, parallelism=1)
        app.login("alice", STRONG_PASSWORD, None)
        rehashed = app.get_user(user.id)
        assert "t=2" in rehashed.password_hash and rehashed.version == 2
        # and the new hash still verifies
        app.login("alice", STRONG_PASSWORD, None)
        assert app.get_user(user.id).version == 2
        succeeded = [e for _, _, e in stored_events(app) if isinstance(e, LoginAttempt.Succeeded)]
        assert len(succeeded) == 2

    # -- signing keys --------------------------------------------------------------------

    def test_the_first_key_is_generated_once(self, app: IdentityApplication) -> None:
        kid = app.ensure_signing_key()
        assert app.ensure_signing_key() == kid
        assert [k["kid"] for k in app.jwks()["keys"]] == [kid]
        if self.shares_store:
            other = self.another_app(app)
            try:
                assert other.ensure_signing_key() == kid
            finally:
                other.close()

    def test_rotation_keeps_the_old_kid_until_its_tokens_expired_then_drops_it(
        self, app: IdentityApplication, clock: Clock
    ) -> None:
        old_kid = app.ensure_signing_key()
        app.register_user("alice", STRONG_PASSWORD, ["nurse"])
        old_token = app.login("alice", STRONG_PASSWORD, None).access_token

        new_kid, retired = app.rotate_signing_key(actor={"sub": "admin-1"})
        assert retired == old_kid and new_kid != old_kid
        assert [k["kid"] for k in app.jwks()["keys"]] == [new_kid, old_kid]
        # tokens are now signed with the new key; the old token still verifies
        new_token = app.login("alice", STRONG_PASSWORD, None)
        assert new_token.kid == new_kid
        verifier = verifier_for(app)
        verify(verifier, old_token)
        verify(verifier, new_token.access_token)

        grace = app.settings.token_ttl_seconds + app.settings.jwks_retired_key_leeway_seconds
        clock.advance(grace - 1)
        assert [k["kid"] for k in app.jwks()["keys"]] == [new_kid, old_kid]
        clock.advance(1)
        assert [k["kid"] for k in app.jwks()["keys"]] == [new_kid]
        with pytest.raises(InvalidToken):
            verify(verifier_for(app), old_token)

    def test_a_stale_rotation_conflicts_instead_of_forking_the_key_ring(
        self, app: IdentityApplication
    ) -> None:
        app.ensure_signing_key()
        # a second rotation decided on what the first one also read...
        stale_ring = app.key_ring()
        assert stale_ring is not None
        stale_current: SigningKey = app.repository.get(stale_ring.current_key_id)
        winner, _ = app.rotate_signing_key()
        # ...is refused as a whole, its new key included
        material = generate_key()
        loser = SigningKey.activate(
            material.kid, material.private_key_pem, material.public_jwk, app.clock()
        )
        stale_current.retire(app.clock())
        stale_ring.rotate(loser, stale_current, app.clock())
        with pytest.raises(IntegrityError):
            app.save(loser, stale_current, stale_ring)
        ring = app.key_ring()
        assert ring is not None and ring.current_kid == winner
        assert loser.id not in app.repository

    def test_private_keys_and_hashes_are_encrypted_at_rest(self, app: IdentityApplication) -> None:
        app.ensure_signing_key()
        app.register_user("alice", STRONG_PASSWORD, ["nurse"])
        plains = b"".join(plain for _, plain, _ in stored_events(app))
        assert b"PRIVATE KEY" in plains and b"$argon2id$" in plains
        for raw, _, _ in stored_events(app):
            assert b"PRIVATE KEY" not in raw and b"argon2" not in raw

    # -- demo seed ----------------------------------------------------------------------

    def test_demo_users_are_seeded_once_and_only_in_development(
        self, app: IdentityApplication
    ) -> None:
        with pytest.raises(ValueError, match="development"):
            seed_demo_users(app)
        app.settings = app.settings.model_copy(
            update={"profile": Profile.development, "seed_demo_users": True}
        )
        app.ensure_signing_key()
        assert seed_demo_users(app) == len(DEMO_ROLES)
        assert seed_demo_users(app) == 0
        clinic = app.find_organization("Demo Clinic")
        assert clinic is not None
        for role in DEMO_ROLES:
            user = app.find_user(role)
            assert user is not None and user.roles == (role,)
            assert user.organization_id == clinic.id
        principal = verify(verifier_for(app), app.login("admin", DEMO_PASSWORD, None).access_token)
        assert principal.roles == {"admin"}


class TestIdentityOnSQLite(TestIdentityInMemory):
    shares_store = True

    @pytest.fixture
    def env(self) -> dict[str, str]:
        return {}

    def test_a_user_survives_a_restart(self, app: IdentityApplication) -> None:
        if not app.settings.uses_postgres():
            assert (app.settings.var_dir / "identity" / "events.sqlite3").exists()
        user = app.register_user("alice", STRONG_PASSWORD, ["nurse"])
        other = self.another_app(app)
        try:
            assert other.get_user(user.id).username == "alice"
            with pytest.raises(UsernameTaken):
                other.register_user("alice", STRONG_PASSWORD, ["nurse"])
        finally:
            other.close()


@pytest.mark.postgres
class TestIdentityOnPostgres(TestIdentityOnSQLite):
    @pytest.fixture
    def settings(
        self, tmp_path: Path, postgres_url: str, fresh_schema_suffix: str
    ) -> Iterator[IdentitySettings]:
        settings = postgres_settings(tmp_path, postgres_url, fresh_schema_suffix)
        yield settings
        drop_schema(postgres_url, settings.db_schema)

    def test_tables_live_in_the_service_schema(self, app: IdentityApplication) -> None:
        app.ensure_signing_key()
        with psycopg.connect(app.settings.database_url) as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (app.settings.db_schema,),
                )
            }
        assert "identity_events" in tables
