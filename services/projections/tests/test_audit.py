"""The audit projection: who did what to which patient, and never the patient's data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from ehr_events.projection import ProjectionRunner
from projections.audit import audit_entries
from projections.config import ProjectionsSettings
from projections.queries import audit
from projections.readmodels import make_runner

from .builders import (
    BASE_TIME,
    access_decided,
    allergy_recorded,
    allergy_refuted,
    demographics_updated,
    login_failed,
    patient_registered,
    user_registered,
)

PATIENT = "5d1f6c0e-2b7a-4c38-9f61-0e4b8a7d2c11"

#: Demographics the builders put in events; none may reach the audit trail.
PHI = [
    "Müller",
    "Anna",
    "1980-02-29",
    "MRN-0001",
    "123-45-6789",
    "Bahnhofstrasse",
    "8001",
    "+41 44",
    "Penicillin",
    "Tolerated",
    "dr.jane.doe",
]


class AuditOnSQLite:
    @pytest.fixture
    def settings(self, sqlite_settings: ProjectionsSettings) -> ProjectionsSettings:
        return sqlite_settings

    @pytest.fixture
    def runner(self, settings: ProjectionsSettings) -> Iterator[ProjectionRunner]:
        runner = make_runner(settings, "audit")
        yield runner
        runner.engine.dispose()

    def entries(self, runner: ProjectionRunner) -> list[dict[str, object]]:
        with runner.engine.connect() as conn:
            rows = conn.execute(select(audit_entries).order_by(audit_entries.c.event_id)).all()
        return [dict(r._mapping) for r in rows]

    def test_commands_are_audited_without_any_demographics(self, runner: ProjectionRunner) -> None:
        runner.apply_envelopes(
            [
                patient_registered(PATIENT),
                demographics_updated(PATIENT, version=2),
                allergy_recorded("allergy-1", PATIENT),
                allergy_refuted("allergy-1", PATIENT),
                user_registered("user-2"),
                login_failed(),
            ]
        )

        entries = self.entries(runner)
        assert len(entries) == 6
        dumped = json.dumps(entries, default=str)
        for value in PHI:
            assert value not in dumped, value

    def test_a_command_names_actor_entity_patient_and_action(
        self, runner: ProjectionRunner
    ) -> None:
        registered = patient_registered(PATIENT)
        runner.apply_envelopes([registered, allergy_recorded("allergy-1", PATIENT)])

        page = audit(runner.engine, patient_id=PATIENT)
        assert page.total == 2
        entry = page.entries[0]
        assert entry["event_id"] == registered[0].id
        assert entry["occurred_at"] == registered[0].time.isoformat()
        assert (entry["category"], entry["action"], entry["subtype"], entry["outcome"]) == (
            "command",
            "C",
            "PatientRegistered",
            "success",
        )
        assert (entry["user_id"], entry["roles"], entry["organization_id"]) == (
            "user-physician",
            ["physician"],
            "org-1",
        )
        assert (entry["entity_type"], entry["entity_id"]) == ("Patient", PATIENT)
        assert entry["detail"] == {}
        allergy = page.entries[1]
        assert (allergy["entity_type"], allergy["detail"]) == (
            "AllergyIntolerance",
            {"allergy_id": "allergy-1"},
        )

    def test_access_decisions_are_audited_with_the_route_template(
        self, runner: ProjectionRunner
    ) -> None:
        runner.apply_envelopes(
            [
                access_decided("d-1", patient_id=PATIENT),
                access_decided(
                    "d-2",
                    patient_id=PATIENT,
                    outcome="denied",
                    action="search",
                    route="/fhir/Patient",
                    user_id="user-biller",
                ),
            ]
        )

        denied = audit(runner.engine, user_id="user-biller").entries
        assert len(denied) == 1
        assert (denied[0]["category"], denied[0]["action"], denied[0]["outcome"]) == (
            "access",
            "E",
            "denied",
        )
        assert (denied[0]["route"], denied[0]["method"], denied[0]["status"]) == (
            "/fhir/Patient",
            "GET",
            403,
        )
        assert denied[0]["detail"] == {"decision_id": "d-2", "reason": "role not permitted"}
        read = audit(runner.engine, user_id="user-physician").entries
        assert [(e["action"], e["outcome"], e["patient_id"]) for e in read] == [
            ("R", "allowed", PATIENT)
        ]

    def test_a_failed_login_keeps_the_reason_and_address_but_not_the_username(
        self, runner: ProjectionRunner
    ) -> None:
        runner.apply_envelopes([login_failed("someone@example.org")])
        (entry,) = audit(runner.engine).entries
        assert (entry["action"], entry["outcome"], entry["entity_type"]) == ("E", "failure", "User")
        assert entry["detail"] == {"reason": "bad-password"}
        assert entry["network_address"] == "10.0.0.7"
        assert "someone" not in json.dumps(entry)

    def test_entries_are_filtered_by_time_and_paged_oldest_first(
        self, runner: ProjectionRunner
    ) -> None:
        decisions = [
            access_decided(f"d-{i}", patient_id=PATIENT, at=BASE_TIME + timedelta(hours=i))
            for i in range(5)
        ]
        runner.apply_envelopes(list(reversed(decisions)))

        window = audit(
            runner.engine,
            since=BASE_TIME + timedelta(hours=1),
            until=BASE_TIME + timedelta(hours=4),
        )
        assert [e["detail"]["decision_id"] for e in window.entries] == ["d-1", "d-2", "d-3"]
        page = audit(runner.engine, patient_id=PATIENT, limit=2, offset=2)
        assert page.total == 5
        assert [e["detail"]["decision_id"] for e in page.entries] == ["d-2", "d-3"]
        assert audit(runner.engine, patient_id="someone-else").total == 0

    def test_a_batch_gives_the_entries_one_by_one_gives(self, runner: ProjectionRunner) -> None:
        # commands and access decisions fill different columns: one insert takes both
        items = [
            access_decided("d-1", patient_id=PATIENT),
            patient_registered(PATIENT),
            login_failed(),
            access_decided("d-2", patient_id=None, outcome="denied"),
            allergy_recorded("allergy-1", PATIENT),
            patient_registered(PATIENT),  # delivered twice
        ]
        assert runner.apply_envelopes(items) == 5
        batched = self.entries(runner)

        runner.reset()
        assert sum(runner.apply_envelopes([item]) for item in items) == 5
        assert self.entries(runner) == batched


class TestAuditOnSQLite(AuditOnSQLite):
    pass


@pytest.mark.postgres
class TestAuditOnPostgreSQL(AuditOnSQLite):
    @pytest.fixture
    def settings(self, postgres_settings: ProjectionsSettings) -> ProjectionsSettings:
        return postgres_settings
