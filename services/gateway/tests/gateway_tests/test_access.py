"""Access decisions: recorded for allow and deny, stored durably, published per the catalogue.

The same story runs on SQLite and on PostgreSQL (a subclass sets the database).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from ehr_events.catalogue import load_all
from ehr_events.db import make_engine
from ehr_events.outbox import OutboxRelay, PositionStore
from ehr_events.testing import TokenFactory
from gateway.access import (
    AccessDecision,
    Decision,
    DecisionLog,
    GatewayApplication,
    open_gateway_application,
)
from gateway.config import GatewaySettings
from gateway.main import create_app
from gateway.relay import translate

from .builders import fhir_allergy, fhir_patient, gateway_settings
from .standin import StandIn


def stored_decisions(settings: GatewaySettings) -> list[AccessDecision.Decided]:
    """Every decision in the gateway's store, read by a fresh application."""
    app = open_gateway_application(settings)
    try:
        notifications = app.recorder.select_notifications(start=1, limit=1000)
        return [app.mapper.to_domain_event(n) for n in notifications]
    finally:
        app.close()


def as_dict(event: AccessDecision.Decided) -> dict[str, Any]:
    return {name: getattr(event, name) for name in AccessDecision.Decided.__annotations__}


class TestAccessDecisionsOnSQLite:
    @pytest.fixture
    def settings(self, tmp_path: Path, upstream: StandIn) -> Iterator[GatewaySettings]:
        yield gateway_settings(tmp_path, upstream.url)

    @pytest.fixture
    def gateway(self, settings: GatewaySettings) -> Iterator[TestClient]:
        with TestClient(create_app(settings)) as client:
            yield client

    def test_allowed_and_denied_requests_are_recorded_with_route_templates(
        self, gateway: TestClient, settings: GatewaySettings, tokens: TokenFactory
    ) -> None:
        physician = tokens.headers(["physician"], subject="dr-who", organization_id="org-1")
        # allowed: a create, a search with PHI in its query string, a read
        created = gateway.post("/fhir/Patient", json=fhir_patient(), headers=physician)
        patient_id = created.json()["id"]
        gateway.get("/fhir/Patient?family=Zebedee&birthdate=1984-02-29", headers=physician)
        gateway.get(f"/fhir/Patient/{patient_id}", headers=physician)
        # denied: a front-desk clerk on allergies, a forged token, no token
        gateway.get(
            f"/fhir/AllergyIntolerance?patient={patient_id}",
            headers=tokens.headers(["frontdesk"], subject="clerk"),
        )
        gateway.get(f"/fhir/Patient/{patient_id}", headers={"Authorization": "Bearer forged"})
        gateway.get("/fhir/Patient?family=Zebedee")
        # not audited: public metadata
        gateway.get("/fhir/metadata")
        assert gateway.app.state.decisions.flush()

        decisions = stored_decisions(settings)

        summary = [(d.method, d.route, d.action, d.outcome, d.status) for d in decisions]
        assert summary == [
            ("POST", "/fhir/Patient", "create", "allowed", 201),
            ("GET", "/fhir/Patient", "search", "allowed", 200),
            ("GET", "/fhir/Patient/{id}", "read", "allowed", 200),
            ("GET", "/fhir/AllergyIntolerance", "search", "denied", 403),
            ("GET", "/fhir/Patient/{id}", "read", "denied", 401),
            ("GET", "/fhir/Patient", "search", "denied", 401),
        ]
        create, search, read, clerk, forged, anonymous = decisions
        assert (create.user_id, create.roles, create.organization_id) == (
            "dr-who",
            ["physician"],
            "org-1",
        )
        assert create.patient_id == read.patient_id == clerk.patient_id == patient_id
        assert search.patient_id is None
        assert clerk.reason == "role lacks allergy.read"
        assert forged.user_id is None and forged.reason == "malformed token"
        assert anonymous.reason == "missing bearer token"
        assert {d.client_address for d in decisions} == {"testclient"}
        # no query string, no search term anywhere in what was stored
        stored = json.dumps([as_dict(d) for d in decisions], default=str)
        for leak in ("?", "Zebedee", "1984-02-29", "family"):
            assert leak not in stored

    def test_logins_are_recorded_as_allowed_or_denied_without_credentials(
        self, gateway: TestClient, settings: GatewaySettings
    ) -> None:
        for password in ("right", "wrong"):
            form = {"grant_type": "password", "username": "alice", "password": password}
            gateway.post("/auth/token", data=form)
        gateway.get("/auth/jwks")
        assert gateway.app.state.decisions.flush()

        decisions = stored_decisions(settings)

        assert [(d.route, d.action, d.outcome, d.status) for d in decisions] == [
            ("/auth/token", "login", "allowed", 200),
            ("/auth/token", "login", "denied", 400),
        ]
        stored = json.dumps([as_dict(d) for d in decisions], default=str)
        assert "alice" not in stored and "right" not in stored

    def test_allergy_writes_record_the_patient_from_the_body(
        self, gateway: TestClient, settings: GatewaySettings, tokens: TokenFactory
    ) -> None:
        nurse = tokens.headers(["nurse"])
        patient_id = gateway.post("/fhir/Patient", json=fhir_patient(), headers=nurse).json()["id"]
        gateway.post("/fhir/AllergyIntolerance", json=fhir_allergy(patient_id), headers=nurse)
        assert gateway.app.state.decisions.flush()

        allergy = stored_decisions(settings)[-1]

        assert (allergy.route, allergy.patient_id, allergy.status) == (
            "/fhir/AllergyIntolerance",
            patient_id,
            201,
        )

    def test_a_throttled_flood_is_recorded_once(
        self, tmp_path: Path, upstream: StandIn, tokens: TokenFactory
    ) -> None:
        settings = gateway_settings(
            tmp_path, upstream.url, rate_per_subject=0.01, burst_per_subject=1
        )
        with TestClient(create_app(settings)) as gateway:
            for _ in range(5):
                gateway.get("/fhir/Patient?family=A", headers=tokens.headers(subject="flood"))
            assert gateway.app.state.decisions.flush()

        statuses = [(d.outcome, d.status, d.reason) for d in stored_decisions(settings)]

        assert statuses == [("allowed", 200, None), ("denied", 429, "rate limited")]

    def test_every_decision_translates_to_a_catalogue_event_on_a_patient_keyed_envelope(
        self, gateway: TestClient, settings: GatewaySettings, tokens: TokenFactory
    ) -> None:
        headers = tokens.headers(["physician"], subject="dr-who", organization_id="org-1")
        patient_id = gateway.post("/fhir/Patient", json=fhir_patient(), headers=headers).json()[
            "id"
        ]
        gateway.get("/fhir/Patient/x", headers=tokens.headers(["biller"], subject="b"))
        assert gateway.app.state.decisions.flush()
        app = open_gateway_application(settings)
        relay = OutboxRelay(
            app,
            translate,
            source="gateway",
            positions=PositionStore(make_engine(settings, "gateway"), "gateway"),
            bootstrap="127.0.0.1:9",
        )
        catalogue = load_all()

        try:
            notifications = list(app.recorder.select_notifications(start=1, limit=10))
            envelopes = [relay.envelope_for(n) for n in notifications]
        finally:
            app.close()

        assert [e.type for e in envelopes] == ["ehr.gateway.AccessDecided.v1"] * 2
        for envelope in envelopes:
            catalogue.validate(envelope.type, envelope.data)
        created = envelopes[0]
        assert created.patientid == patient_id
        assert (created.actor, created.actorrole, created.organization) == (
            "dr-who",
            "physician",
            "org-1",
        )
        assert created.data["route"] == "/fhir/Patient"
        assert created.data["decision_id"] == created.subject


class TestAccessDecisionsOnPostgreSQL(TestAccessDecisionsOnSQLite):
    @pytest.fixture
    def settings(
        self, tmp_path: Path, upstream: StandIn, postgres_url: str, fresh_schema_suffix: str
    ) -> Iterator[GatewaySettings]:
        schema = f"gateway_{fresh_schema_suffix}"
        settings = gateway_settings(
            tmp_path, upstream.url, database_url=postgres_url, db_schema=schema
        )
        yield settings
        engine = make_engine(settings, "gateway")
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


# --- the decision log on its own ---------------------------------------------------------


class FlakyStore(GatewayApplication):
    """The gateway's store, failing its first saves as a database restart would."""

    failures = 2

    def record_decisions(self, decisions: list[Decision]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database restarting: Zebedee 1984-02-29")
        super().record_decisions(decisions)


def test_decisions_survive_a_store_outage_and_failures_log_no_phi(
    tmp_path: Path, upstream: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    from ehr_events.config import eventsourcing_env

    settings = gateway_settings(tmp_path, upstream.url)
    store = FlakyStore(env=eventsourcing_env(settings, "gateway"))
    log = DecisionLog(store, max_backoff=0.05)
    log.start()
    decision = Decision("GET", "/fhir/Patient/{id}", "read", "allowed", 200, patient_id="p-1")

    with caplog.at_level(logging.WARNING, logger="gateway.access"):
        log.record(decision)
        assert log.flush(timeout=5)
    log.stop()

    saved = store.get_decision(decision.decision_id)
    assert (saved.route, saved.patient_id) == ("/fhir/Patient/{id}", "p-1")
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 2
    assert "Zebedee" not in caplog.text and "1984" not in caplog.text
    store.close()


def test_translate_keeps_other_events_private() -> None:
    assert translate(object()) is None


def test_a_decision_is_one_event_with_its_own_id() -> None:
    decision = Decision("PUT", "/fhir/Patient/{id}", "update", "denied", 403, roles=("nurse",))

    aggregate = AccessDecision.take(decision)
    (event,) = aggregate.collect_events()
    integration = translate(event)

    assert aggregate.id == decision.decision_id
    assert integration is not None
    assert integration.decision_id == str(uuid.UUID(str(decision.decision_id)))
    assert integration.roles == ("nurse",)
    assert load_all().validate(integration.event_type, integration.model_dump(mode="json"))
