"""Talking to the platform as a client does: through the gateway, over HTTP only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from ehr_events.devplatform import Platform

FHIR_JSON = "application/fhir+json"
T = TypeVar("T")


def login(platform: Platform, username: str = "physician", password: str = "demo") -> str:
    response = httpx.post(
        f"{platform.gateway_url}/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
        timeout=15,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def patient_id_of(response: httpx.Response) -> str:
    """The id of a created patient, from its ``Location`` (minimal) or its body."""
    location = response.headers.get("location", "")
    if "/Patient/" in location:
        return location.split("/Patient/")[1].split("/")[0]
    return str(response.json()["id"])


def search_patients(client: httpx.Client, headers: dict[str, str], family: str) -> list[dict]:
    """Every Patient the chart finds by ``family``, all pages followed (at most 20 pages).

    Pages are read one request at a time: a chart still catching up can move
    between them (a new match shifts the offsets), so a walk that does not add up
    (a total other than the rows found, an id twice) is walked again.
    """
    for _attempt in range(5):
        found, total = _walk(client, headers, family)
        if total == len(found) == len({r["id"] for r in found}):
            return found
        time.sleep(0.5)
    raise AssertionError(f"search pages never added up: total {total}, {len(found)} found")


def _walk(client: httpx.Client, headers: dict[str, str], family: str) -> tuple[list[dict], int]:
    response = client.post(
        "/fhir/Patient/_search", data={"family": family, "_count": "100"}, headers=headers
    )
    assert response.status_code == 200, response.text
    found: list[dict] = []
    for _ in range(20):
        bundle = response.json()
        found += [entry["resource"] for entry in bundle.get("entry") or ()]
        links = {link["relation"]: link["url"] for link in bundle.get("link") or ()}
        if "next" not in links:
            return found, int(bundle["total"])
        response = client.get(links["next"], headers=headers)
        assert response.status_code == 200, response.text
    raise AssertionError("more than 20 pages of search results")


def given_name(resource: dict[str, Any]) -> str:
    return str(resource["name"][0]["given"][0])


def wait_until(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float = 0.5,
    what: str = "condition",
) -> T:
    """Call ``probe`` until ``done(result)``; fail with the last result after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last: {result!r}"[:2000])
        time.sleep(interval)
