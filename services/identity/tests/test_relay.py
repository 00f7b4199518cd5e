"""What the identity service publishes: catalogue events, and never a secret."""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from ehr_events.catalogue import load_all
from ehr_events.db import make_engine
from ehr_events.envelope import Envelope
from ehr_events.outbox import OutboxRelay, PositionStore
from ehr_events.testing import ProducerContract
from identity.application import IdentityApplication
from identity.domain.errors import LoginRefused
from identity.domain.signing_key import KeyRing
from identity.domain.user import User
from identity.passwords import Passwords
from identity.relay import translate
from identity.testing import IN_MEMORY, STRONG_PASSWORD, Clock, identity_settings, stored_events

CANARY = "Canary-Relay-Password-0042"
ADMIN = {"sub": "admin-1", "role": "admin"}


def tell_the_story(var_dir: Path) -> IdentityApplication:
    """An application whose store holds every kind of identity event."""
    app = IdentityApplication(identity_settings(var_dir), clock=Clock(), env=IN_MEMORY)
    app.ensure_signing_key()
    clinic = app.register_organization("Demo Clinic", actor=ADMIN)
    alice = app.register_user("alice", STRONG_PASSWORD, ["nurse"], clinic.id, actor=ADMIN)
    app.register_user("bob", STRONG_PASSWORD, ["biller"], actor=ADMIN)
    app.login("alice", STRONG_PASSWORD, "192.0.2.1")
    for username in ("alice", "nobody"):
        with pytest.raises(LoginRefused):
            app.login(username, CANARY, "192.0.2.1")
    app.passwords = Passwords(time_cost=2, memory_cost=64, parallelism=1)
    app.login("bob", STRONG_PASSWORD, None)  # rehashes bob's password: a private event
    app.change_user_roles(alice.id, ["nurse", "auditor"], actor=ADMIN)
    app.disable_user(alice.id, actor=ADMIN)
    with pytest.raises(LoginRefused):
        app.login("alice", STRONG_PASSWORD, None)
    app.rotate_signing_key(actor=ADMIN)
    return app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[IdentityApplication]:
    app = tell_the_story(tmp_path)
    yield app
    app.close()


class TestIdentityHonoursTheCatalogue(ProducerContract):
    """The platform's producer contract, on the same story."""

    source = "identity"

    def translate(self, domain_event: Any) -> Any:
        return translate(domain_event)

    def domain_events(self) -> list[Any]:
        with tempfile.TemporaryDirectory() as folder:
            app = tell_the_story(Path(folder))
            try:
                return [event for _, _, event in stored_events(app)]
            finally:
                app.close()


def secrets_of(app: IdentityApplication) -> list[str]:
    """Every secret the store holds: password hashes, private key PEMs and exponents."""
    found: list[str] = [CANARY, STRONG_PASSWORD]
    for _, plain, _ in stored_events(app):
        state = json.loads(plain)
        for name in ("password_hash", "private_key_pem"):
            if name in state:
                found.append(state[name])
    assert any(s.startswith("-----BEGIN PRIVATE KEY") for s in found)
    assert any(s.startswith("$argon2id$") for s in found)
    return found


def test_every_published_event_matches_its_catalogue_schema(app: IdentityApplication) -> None:
    catalogue = load_all()
    published: set[str] = set()
    for _, _, event in stored_events(app):
        integration = translate(event)
        if integration is not None:
            catalogue.validate(integration.event_type, integration.model_dump(mode="json"))
            published.add(integration.event_type)
    assert published == {t for t in catalogue.types() if t.startswith("ehr.identity.")}


def test_no_secret_appears_in_any_published_event(app: IdentityApplication) -> None:
    secrets = secrets_of(app)
    for _, _, event in stored_events(app):
        integration = translate(event)
        if integration is None:
            continue
        text = integration.model_dump_json()
        for secret in secrets:
            assert secret not in text, integration.event_type
        assert "PRIVATE" not in text and "argon2" not in text


def test_login_failures_name_the_reason_and_the_known_user(app: IdentityApplication) -> None:
    failed = [
        translate(e).model_dump(mode="json")  # type: ignore[union-attr]
        for _, _, e in stored_events(app)
        if type(e).__name__ == "Failed"
    ]
    alice_id = str(User.create_id("alice"))
    assert failed == [
        {
            "username": "alice",
            "user_id": alice_id,
            "reason": "bad-password",
            "client_address": "192.0.2.1",
        },
        {
            "username": "nobody",
            "user_id": None,
            "reason": "unknown-user",
            "client_address": "192.0.2.1",
        },
        {"username": "alice", "user_id": alice_id, "reason": "disabled", "client_address": None},
    ]


def test_key_events_carry_only_the_kid_and_algorithm(app: IdentityApplication) -> None:
    ring = app.key_ring()
    assert ring is not None
    keys = [
        translate(e).model_dump(mode="json")  # type: ignore[union-attr]
        for _, _, e in stored_events(app)
        if type(e).__name__ in {"Activated", "Retired"}
    ]
    first, second = ring.retired[0]["kid"], ring.current_kid
    assert keys == [
        {"kid": first, "algorithm": "ES256"},
        {"kid": second, "algorithm": "ES256"},
        {"kid": first},
    ]


def test_private_bookkeeping_is_not_published(app: IdentityApplication) -> None:
    private = {type(e).__qualname__ for _, _, e in stored_events(app) if translate(e) is None}
    assert private == {
        "User.PasswordRehashed",
        "KeyRing.Started",
        "KeyRing.Rotated",
    }
    assert all(
        translate(e) is None for _, _, e in stored_events(app) if isinstance(e, KeyRing.Event)
    )


def test_the_outbox_relay_envelopes_identity_events_with_the_acting_admin(
    app: IdentityApplication, tmp_path: Path
) -> None:
    positions = PositionStore(make_engine(app.settings, "identity"), "identity")
    relay = OutboxRelay(
        app, translate, source="identity", positions=positions, bootstrap="127.0.0.1:9"
    )
    envelopes: list[Any] = [
        envelope
        for notification in app.recorder.select_notifications(start=None, limit=1000)
        if (envelope := relay.envelope_for(notification)) is not None
    ]
    registered = [e for e in envelopes if e.type == "ehr.identity.UserRegistered.v1"]
    assert [e.data["username"] for e in registered] == ["alice", "bob"]
    assert {(e.actor, e.actorrole) for e in registered} == {("admin-1", "admin")}
    assert all(e.source == "identity" and e.subject for e in envelopes)
    assert relay.topic == "ehr.identity.events"


@pytest.mark.kafka
def test_the_relay_publishes_the_story_through_the_broker_without_secrets(
    app: IdentityApplication, broker: str
) -> None:
    topic = f"ehr.identity{uuid.uuid4().hex[:6]}.events"
    relay = OutboxRelay(
        app,
        translate,
        source="identity",
        positions=PositionStore(make_engine(app.settings, "identity"), "identity"),
        bootstrap=broker,
        topic=topic,
    )
    expected = [e for _, _, e in stored_events(app) if translate(e) is not None]

    async def drain_and_read() -> list[Any]:
        try:
            while await relay.run_once():
                pass
        finally:
            await relay.close()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        try:
            messages: list[Any] = []
            deadline = asyncio.get_running_loop().time() + 20
            while len(messages) < len(expected):
                assert asyncio.get_running_loop().time() < deadline, "messages missing"
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    messages.extend(batch)
            return messages
        finally:
            await consumer.stop()

    messages = asyncio.run(drain_and_read())
    envelopes = [Envelope.from_kafka(m.headers, m.value) for m in messages]
    assert sorted(e.type for e in envelopes) == sorted(
        translate(e).event_type  # type: ignore[union-attr]
        for e in expected
    )
    assert relay.positions.get() == app.recorder.max_notification_id()
    wire = b"".join(m.value + b"".join(v for _, v in m.headers) for m in messages)
    for secret in secrets_of(app):
        assert secret.encode() not in wire
