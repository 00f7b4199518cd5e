"""Every service honours the event catalogue, as producer and as consumer.

Producers: each service's story, told through its own application on the
in-memory store, publishes only catalogue types whose data validates.
Consumers: each read model accepts everything the producers publish on its
topics, and applies each event exactly once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from ehr_events.config import ServiceSettings
from ehr_events.envelope import Envelope
from ehr_events.outbox import published_envelopes
from ehr_events.testing import ConsumerContract, ProducerContract, settings_for_test
from gateway.access import AccessDecision, Decision, GatewayApplication
from gateway.relay import translate as gateway_translate
from identity.application import IdentityApplication
from identity.domain.errors import LoginRefused
from identity.relay import translate as identity_translate
from identity.testing import IN_MEMORY, identity_settings
from projections.config import ProjectionsSettings
from projections.readmodels import make_runner
from records.application import RecordsApplication
from records.relay import translate as records_translate

ACTOR = {"sub": "user-1", "role": "physician", "org": "org-1"}
DEMOGRAPHICS = {
    "identifiers": [{"system": "urn:ehr:mrn", "value": "MRN-CONTRACT-1"}],
    "name": [{"family": "Contract", "given": ["Carla"]}],
    "birth_date": "1970-01-01",
    "sex": "female",
    "telecom": [],
    "address": [],
}
ALLERGY = {
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
    "category": ["medication"],
    "criticality": "high",
}


def records_story() -> RecordsApplication:
    app = RecordsApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    patient = app.register_patient("MRN-CONTRACT-1", DEMOGRAPHICS, ACTOR)
    app.update_demographics(patient.id, 1, {**DEMOGRAPHICS, "sex": "other"}, ACTOR)
    allergy = app.record_allergy(patient.id, ALLERGY, ACTOR)
    app.refute_allergy(allergy.id, 1, None, ACTOR)
    return app


def identity_story(folder: Path) -> IdentityApplication:
    app = IdentityApplication(identity_settings(folder), env=IN_MEMORY)
    app.ensure_signing_key()
    clinic = app.register_organization("Contract Clinic", actor=ACTOR)
    user = app.register_user("carla", "a-long-enough-password", ["nurse"], clinic.id, actor=ACTOR)
    app.login("carla", "a-long-enough-password", "127.0.0.1")
    with pytest.raises(LoginRefused):  # the refusal is recorded too
        app.login("carla", "not-the-password-at-all", "127.0.0.1")
    app.change_user_roles(user.id, ["nurse", "auditor"], actor=ACTOR)
    app.disable_user(user.id, actor=ACTOR)
    app.rotate_signing_key(actor=ACTOR)
    return app


def gateway_story(patient_id: str) -> GatewayApplication:
    app = GatewayApplication(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    for outcome, status in (("allowed", 200), ("denied", 403)):
        decision = Decision(
            method="GET",
            route="/fhir/Patient/{id}",
            action="read",
            outcome=outcome,
            status=status,
            user_id="user-1",
            roles=("physician",),
            patient_id=patient_id,
        )
        app.save(AccessDecision.take(decision))
    return app


class TestRecordsPublishesOnlyTheCatalogue(ProducerContract):
    source = "records"

    def translate(self, domain_event: Any) -> Any:
        return records_translate(domain_event)

    def domain_events(self) -> list[Any]:
        app = records_story()
        notifications = app.recorder.select_notifications(start=None, limit=100)
        return [app.mapper.to_domain_event(n) for n in notifications]


class TestIdentityPublishesOnlyTheCatalogue(ProducerContract):
    source = "identity"

    def translate(self, domain_event: Any) -> Any:
        return identity_translate(domain_event)

    def domain_events(self) -> list[Any]:
        with tempfile.TemporaryDirectory() as folder:
            app = identity_story(Path(folder))
            notifications = app.recorder.select_notifications(start=None, limit=100)
            return [app.mapper.to_domain_event(n) for n in notifications]


class TestGatewayPublishesOnlyTheCatalogue(ProducerContract):
    source = "gateway"

    def translate(self, domain_event: Any) -> Any:
        return gateway_translate(domain_event)

    def domain_events(self) -> list[Any]:
        app = gateway_story("patient-1")
        notifications = app.recorder.select_notifications(start=None, limit=100)
        return [app.mapper.to_domain_event(n) for n in notifications]


def everything_published() -> list[Envelope]:
    records = records_story()
    patient_id = str(records.recorder.select_notifications(start=None, limit=1)[0].originator_id)
    with tempfile.TemporaryDirectory() as folder:
        identity = identity_story(Path(folder))
        envelopes = published_envelopes(identity, identity_translate, "identity")
    envelopes += published_envelopes(records, records_translate, "records")
    envelopes += published_envelopes(gateway_story(patient_id), gateway_translate, "gateway")
    return envelopes


class ReadModelContract(ConsumerContract):
    name = ""

    def settings(self, tmp_path: Path) -> ServiceSettings:
        return settings_for_test(ProjectionsSettings, tmp_path)

    def make_runner(self, tmp_path: Path) -> Any:
        return make_runner(self.settings(tmp_path), self.name)

    def make_runner_topics(self) -> list[str]:
        with tempfile.TemporaryDirectory() as folder:
            return list(self.make_runner(Path(folder)).projection.topics)

    def envelopes(self) -> list[Any]:
        topics = self.make_runner_topics()
        return [e for e in everything_published() if f"ehr.{e.source}.events" in topics]


class TestTheChartAcceptsEverythingOnItsTopics(ReadModelContract):
    name = "chart"


class TestTheAuditTrailAcceptsEverythingOnItsTopics(ReadModelContract):
    name = "audit"

    def test_the_audit_trail_follows_every_producer(self) -> None:
        assert set(self.make_runner_topics()) == {
            "ehr.records.events",
            "ehr.identity.events",
            "ehr.gateway.events",
        }
