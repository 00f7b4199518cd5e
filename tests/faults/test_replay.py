"""Replaying the stream changes no read model.

The read models are built from the stream, and the projections key idempotency
on event ids: so rebuilding a read model from the whole stream, twice, gives the
same rows as the live projector built; and a relay that forgets its position and
publishes every event a second time changes nothing either.
"""

from __future__ import annotations

import httpx
import pytest

from ehr_events.devplatform import Platform

from . import builders
from .fhirclient import FHIR_JSON, login
from .stores import PUBLISHERS, checksum, forget_relay_position, read_model
from .stream import MODEL_TOPICS, event_ids_on, rebuild, wait_until_quiet

pytestmark = pytest.mark.e2e

MODELS = tuple(MODEL_TOPICS)
PROJECTORS = tuple(f"{model}-projector" for model in MODELS)
RELAYS = tuple(f"{service}-relay" for service in PUBLISHERS)


def checksums(platform: Platform) -> dict[str, dict[str, tuple[int, str]]]:
    return {model: checksum(read_model(platform.var_dir, model)) for model in MODELS}


@pytest.fixture(scope="module", autouse=True)
def history(platform: Platform, client: httpx.Client, physician: dict[str, str]) -> None:
    """A little of everything: registrations, updates, allergies, searches, a denial, logins."""
    family = builders.family_name("Replay")
    json_headers = {**physician, "Content-Type": FHIR_JSON}
    for i in range(12):
        created = client.post(
            "/fhir/Patient", json=builders.patient(family, f"R{i:02d}"), headers=json_headers
        )
        assert created.status_code == 201, created.text
        resource = created.json()
        if i % 3 == 0:
            changed = builders.update_of(resource, gender="other")
            updated = client.put(
                f"/fhir/Patient/{resource['id']}",
                json=changed,
                headers={**json_headers, "If-Match": 'W/"1"'},
            )
            assert updated.status_code == 200, updated.text
        if i % 4 == 0:
            allergy = client.post(
                "/fhir/AllergyIntolerance",
                json=_allergy(resource["id"]),
                headers=json_headers,
            )
            assert allergy.status_code == 201, allergy.text
    assert client.post("/fhir/Patient/_search", data={"family": family}, headers=physician)
    frontdesk = {"Authorization": f"Bearer {login(platform, 'frontdesk')}"}
    denied = client.get(
        "/fhir/AllergyIntolerance", params={"patient": resource["id"]}, headers=frontdesk
    )
    assert denied.status_code == 403


def _allergy(patient_id: str) -> dict:
    return {
        "resourceType": "AllergyIntolerance",
        "patient": {"reference": f"Patient/{patient_id}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
        "criticality": "high",
    }


def test_rebuilding_every_read_model_twice_changes_none_of_them(platform: Platform) -> None:
    # what the live projectors built
    wait_until_quiet(platform)
    live = checksums(platform)
    assert live["chart"]["chart_resources"][0] >= 12
    platform.stop(*PROJECTORS)
    try:
        # replay the whole stream into every read model, twice
        first_counts = rebuild(platform, *MODELS)
        first = checksums(platform)
        second_counts = rebuild(platform, *MODELS)
        second = checksums(platform)
    finally:
        platform.start(*PROJECTORS)
    assert first_counts == second_counts
    for model in MODELS:
        assert first_counts[model] == live[model]["projection_processed_events"][0]
        assert first[model] == live[model], model
        assert second[model] == first[model], model


def test_publishing_every_event_a_second_time_changes_no_read_model(platform: Platform) -> None:
    wait_until_quiet(platform)
    before = checksums(platform)
    every_topic = MODEL_TOPICS["audit"]
    # (the stream may already hold some events twice: delivery is at least once)
    published = event_ids_on(platform, every_topic)
    # each relay forgets how far it got, and publishes its whole store again
    platform.stop(*RELAYS)
    for service in PUBLISHERS:
        forget_relay_position(platform.var_dir, service)
    platform.start(*RELAYS)
    wait_until_quiet(platform)
    # every event is on the broker once more, and each read model took it once
    republished = event_ids_on(platform, every_topic)
    assert set(republished) == set(published)
    assert all(republished[event] > published[event] for event in published)
    assert checksums(platform) == before
