"""Requests made while a service's database is unavailable, and what each answer must be.

Every request is answered within :data:`BOUNDED_SECONDS`: 503 with ``Retry-After``,
a FHIR ``OperationOutcome`` (code ``transient``) from the gateway's facade and
``application/problem+json`` from a service's own API. Never a hang, never a 500,
never a stack trace or a value the request carried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ehr_events.devplatform import Platform

from . import builders
from .fhirclient import FHIR_JSON, given_name, search_patients, wait_until

#: The most a request may take while a database is unavailable.
BOUNDED_SECONDS = 15

Call = Callable[[], httpx.Response]


def create_patient(client: httpx.Client, headers: dict[str, str], body: dict[str, Any]) -> dict:
    """Create a Patient through the facade; it must be created (201)."""
    response = client.post(
        "/fhir/Patient", json=body, headers={**headers, "Content-Type": FHIR_JSON}
    )
    assert response.status_code == 201, response.text
    return response.json()


def requests_while_away(
    platform: Platform,
    headers: dict[str, str],
    existing: dict[str, Any],
    family: str,
    *,
    kinds: Sequence[str] | None = None,
) -> dict[str, Call]:
    """One request of each kind (or of each of ``kinds``), by name, in that order.

    A create and a read straight at the records API, and a create, an update, a
    read and a search through the facade (the last two need only the chart).
    """
    records_url = f"http://127.0.0.1:{platform.ports['records']}"
    gateway_url = platform.gateway_url
    json_headers = {**headers, "Content-Type": FHIR_JSON}
    timeout = httpx.Timeout(BOUNDED_SECONDS + 15)
    direct = builders.mrn(family, 1)
    calls: dict[str, Call] = {
        "create at the records API": lambda: httpx.post(
            f"{records_url}/patients",
            json={
                "mrn": direct,
                "identifiers": [{"system": "urn:ehr:mrn", "value": direct}],
                "name": [{"family": family, "given": ["Direct"]}],
                "birth_date": "1980-01-01",
                "sex": "female",
            },
            headers=headers,
            timeout=timeout,
        ),
        "read at the records API": lambda: httpx.get(
            f"{records_url}/patients/{existing['id']}", headers=headers, timeout=timeout
        ),
        "create through the gateway": lambda: httpx.post(
            f"{gateway_url}/fhir/Patient",
            json=builders.patient(family, "Refused"),
            headers=json_headers,
            timeout=timeout,
        ),
        "update through the gateway": lambda: httpx.put(
            f"{gateway_url}/fhir/Patient/{existing['id']}",
            json=builders.update_of(existing, gender="other"),
            headers={**json_headers, "If-Match": 'W/"1"'},
            timeout=timeout,
        ),
        "read through the gateway": lambda: httpx.get(
            f"{gateway_url}/fhir/Patient/{existing['id']}", headers=headers, timeout=timeout
        ),
        "search through the gateway": lambda: httpx.post(
            f"{gateway_url}/fhir/Patient/_search",
            data={"family": family},
            headers=headers,
            timeout=timeout,
        ),
    }
    return calls if kinds is None else {kind: calls[kind] for kind in kinds}


def answer_all(calls: dict[str, Call]) -> dict[str, tuple[httpx.Response | Exception, float]]:
    """Each call's answer (or the client's time-out) and how long it took, one after another.

    One at a time: concurrent writers would queue for the service's writer and
    wait out each other's time-outs.
    """
    answers = {name: _timed(call) for name, call in calls.items()}
    print({name: (getattr(r, "status_code", r), round(s, 1)) for name, (r, s) in answers.items()})
    return answers


def assert_unavailable(
    name: str, answer: httpx.Response | Exception, seconds: float, *, carried: tuple[str, ...]
) -> None:
    """The answer is a bounded 503 of the right media type, naming none of ``carried``."""
    assert isinstance(answer, httpx.Response), (name, answer, seconds)
    assert seconds < BOUNDED_SECONDS, (name, seconds)
    assert answer.status_code == 503, (name, answer.status_code, answer.text)
    assert "retry-after" in answer.headers, name
    assert "Traceback" not in answer.text, name
    assert not any(value in answer.text for value in carried), name
    if "gateway" in name:
        assert answer.headers["content-type"].startswith(FHIR_JSON), name
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome", name
        assert outcome["issue"][0]["code"] == "transient", name
    else:
        assert answer.headers["content-type"].startswith("application/problem+json"), name
        assert answer.json()["status"] == 503, name


def _timed(call: Call) -> tuple[httpx.Response | Exception, float]:
    start = time.monotonic()
    try:
        return call(), time.monotonic() - start
    except httpx.HTTPError as exc:  # a hang ends as a client time-out
        return exc, time.monotonic() - start


def assert_writes_resume(client: httpx.Client, headers: dict[str, str], family: str) -> None:
    """A write succeeds and reaches the chart; of ``family`` it holds only Before and After.

    So none of the writes refused meanwhile happened later (each drill created
    "Before" first and asked for "Refused" and "Direct" while the database was away).
    """
    recovered = create_patient(client, headers, builders.patient(family, "After"))
    assert recovered["meta"]["versionId"] == "1"
    found = wait_until(
        lambda: search_patients(client, headers, family),
        lambda resources: "After" in {given_name(r) for r in resources},
        timeout=60,
        what="the write after the outage in the chart",
    )
    assert sorted(given_name(r) for r in found) == ["After", "Before"]
