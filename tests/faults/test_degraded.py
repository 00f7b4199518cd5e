"""The platform under contention and with a part missing.

* 50 updates of one patient at the same version: one wins, the others are told
  to read again (412), and the patient's history has no gap and no duplicate.
* the broker stopped: writes still succeed (the outbox keeps them), reads serve
  the last state, and the chart catches up when the broker is back.
* the records database unavailable: requests get 503 within a bounded time, not
  a hang and not a 500; once it is back, writes succeed again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from ehr_events.devplatform import Platform

from . import builders
from .fhirclient import FHIR_JSON, given_name, patient_id_of, search_patients, wait_until
from .outage import (
    BOUNDED_SECONDS,
    answer_all,
    assert_unavailable,
    assert_writes_resume,
    create_patient,
    requests_while_away,
)
from .stores import aggregate_versions, event_store, relay_progress, write_locked

pytestmark = pytest.mark.e2e

RACERS = 50


async def _race(
    base_url: str, headers: dict[str, str], resource: dict[str, Any]
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=RACERS)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        start = asyncio.Event()

        async def update(i: int) -> httpx.Response:
            body = builders.update_of(resource, name=[{"family": "Racer", "given": [f"R{i:02d}"]}])
            await start.wait()
            return await http.put(
                f"/fhir/Patient/{resource['id']}",
                json=body,
                headers={**headers, "Content-Type": FHIR_JSON, "If-Match": 'W/"1"'},
            )

        tasks = [asyncio.create_task(update(i)) for i in range(RACERS)]
        await asyncio.sleep(0.1)
        start.set()
        return await asyncio.wait_for(asyncio.gather(*tasks), 60)


def test_fifty_concurrent_updates_at_one_version_have_exactly_one_winner(
    platform: Platform, client: httpx.Client, physician: dict[str, str]
) -> None:
    family = builders.family_name("Race")
    resource = create_patient(client, physician, builders.patient(family, "Original"))
    responses = asyncio.run(_race(platform.gateway_url, physician, resource))

    # exactly one update wins; every other one is told its version is stale
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 412: RACERS - 1}, statuses
    winner = next(r for r in responses if r.status_code == 200)
    assert winner.headers["etag"] == 'W/"2"'
    for response in responses:
        if response.status_code == 412:
            assert response.json()["resourceType"] == "OperationOutcome"

    # the winner's change is what the chart shows, at version 2
    read = client.get(f"/fhir/Patient/{resource['id']}", headers=physician)
    assert read.status_code == 200
    assert read.json()["meta"]["versionId"] == "2"
    assert read.json()["name"] == winner.json()["name"]
    # and the event store holds versions 1 and 2 of the patient: no gap, no duplicate
    assert aggregate_versions(platform.var_dir, "records", resource["id"]) == [1, 2]


def test_with_the_broker_stopped_writes_succeed_reads_serve_the_last_state_and_the_chart_catches_up(
    platform: Platform, client: httpx.Client, physician: dict[str, str]
) -> None:
    family = builders.family_name("Nobroker")
    existing = create_patient(client, physician, builders.patient(family, "Before"))
    json_headers = {**physician, "Content-Type": FHIR_JSON}

    platform.stop("broker")
    try:
        # writes succeed: the event store takes them, the outbox keeps them
        start = time.monotonic()
        minimal = []
        for i in range(5):
            response = client.post(
                "/fhir/Patient",
                json=builders.patient(family, f"Minimal{i}"),
                headers={**json_headers, "Prefer": "return=minimal"},
            )
            assert response.status_code == 201, response.text
            assert response.headers["etag"] == 'W/"1"'
            minimal.append(patient_id_of(response))
        assert time.monotonic() - start < 5, "minimal creates do not wait for the chart"
        # a create that asks for the resource waits for the chart, then is answered
        # from the records service: still 201, with the resource as stored
        full = client.post(
            "/fhir/Patient", json=builders.patient(family, "Full"), headers=json_headers
        )
        assert full.status_code == 201, full.text
        assert given_name(full.json()) == "Full" and full.json()["meta"]["versionId"] == "1"
        updated = client.put(
            f"/fhir/Patient/{existing['id']}",
            json=builders.update_of(existing, gender="other"),
            headers={**json_headers, "If-Match": 'W/"1"'},
        )
        assert updated.status_code == 200, updated.text
        assert updated.json()["meta"]["versionId"] == "2"
        # the outbox holds them: the relay cannot get past its last published position
        last, published = relay_progress(platform.var_dir, "records")
        assert published < last

        # reads are served from the chart as it was
        read = client.get(f"/fhir/Patient/{existing['id']}", headers=physician)
        assert read.status_code == 200, read.text
        assert read.json()["id"] == existing["id"]
        found = search_patients(client, physician, family)
        assert existing["id"] in {r["id"] for r in found}
        # and a patient the chart has not seen yet is still never a 404
        fresh = client.get(f"/fhir/Patient/{minimal[0]}", headers=physician)
        assert fresh.status_code == 200, fresh.text
    finally:
        platform.start("broker")

    # the broker is back: the chart catches up with everything written meanwhile
    expected = {"Before", "Full"} | {f"Minimal{i}" for i in range(5)}
    start = time.monotonic()
    found = wait_until(
        lambda: search_patients(client, physician, family),
        lambda resources: (
            {given_name(r) for r in resources} == expected
            and all(r["meta"]["versionId"] == "2" for r in resources if r["id"] == existing["id"])
        ),
        timeout=60,
        what="the chart catching up after the broker's return",
    )
    print(f"chart caught up {time.monotonic() - start:.1f}s after the broker's return")
    assert len(found) == len(expected)
    read = client.get(f"/fhir/Patient/{existing['id']}", headers=physician)
    assert read.json()["meta"]["versionId"] == "2" and read.json()["gender"] == "other"


def test_with_the_records_database_unavailable_requests_get_503_in_bounded_time(
    platform: Platform, client: httpx.Client, physician: dict[str, str]
) -> None:
    family = builders.family_name("Nodb")
    existing = create_patient(client, physician, builders.patient(family, "Before"))
    calls = requests_while_away(
        platform,
        physician,
        existing,
        family,
        kinds=(
            "create at the records API",
            "update through the gateway",
            "read through the gateway",
            "create through the gateway",
        ),
    )

    # another connection holds the records database's write lock for longer than
    # the service's busy time-out, so no write can get through. The requests go one
    # after the other (concurrent writers queue for the service's single writer
    # connection and wait out the busy time-out in turn). The lock is released the
    # moment the last one is answered: a write answered 503 must not happen later.
    with write_locked(event_store(platform.var_dir, "records")):
        answers = answer_all(calls)

    for name, (response, seconds) in answers.items():
        if name.startswith("read"):
            # the chart does not need the records database
            assert isinstance(response, httpx.Response), (name, response, seconds)
            assert seconds < BOUNDED_SECONDS, (name, seconds)
            assert response.status_code == 200, (name, response.status_code)
            continue
        assert_unavailable(name, response, seconds, carried=(family,))

    # the database is back: writes succeed again, and none of the refused ones happened
    assert_writes_resume(client, physician, family)
    assert aggregate_versions(platform.var_dir, "records", existing["id"]) == [1]
