"""A burst of concurrent FHIR creates with a fault injected in the middle of it.

Each write is classified by what the client was told:

* acknowledged: ``201 Created``, the write is committed;
* refused: a 4xx, the write must never show up anywhere;
* unknown: a 5xx or no answer at all (a connection reset mid-request). It may or
  may not be committed, exactly as a real client would see it.

:func:`settle` then does what a real client does with an unknown outcome: it
sends the same create again. The MRN is the patient's natural key, so the retry
answers 201 (the first attempt was lost) or 409 (it was committed), and every
write ends up with a definite fate the chart can be checked against.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from . import builders
from .fhirclient import FHIR_JSON, patient_id_of

Kind = Literal["new", "unborn", "duplicate"]


@dataclass(frozen=True)
class Write:
    """One create of the burst; ``given`` is unique, so the chart shows which one it holds."""

    index: int
    kind: Kind
    given: str
    mrn: str
    body: dict[str, Any]
    minimal: bool


@dataclass(frozen=True)
class Outcome:
    write: Write
    status: int | None  # None: no HTTP answer at all
    patient_id: str | None = None
    failure: str | None = None
    seconds: float = 0.0

    @property
    def acknowledged(self) -> bool:
        return self.status == 201

    @property
    def refused(self) -> bool:
        return self.status is not None and 400 <= self.status < 500

    @property
    def unknown(self) -> bool:
        return not (self.acknowledged or self.refused)


@dataclass(frozen=True)
class Fault:
    """What to break once the burst is under way, and how to repair it."""

    inject: Callable[[], None]
    recover: Callable[[], None]


def plan(family: str, count: int, *, taken_mrn: str) -> list[Write]:
    """``count`` creates: mostly new patients, some the records service must refuse.

    Every 20th write (from the 7th) is born in the future (records answers 422),
    every 20th (from the 13th) reuses ``taken_mrn`` (409). One write in five waits
    for the chart (the facade's default); the others ask for ``return=minimal``.
    """
    writes = []
    for i in range(count):
        given = f"W{i:04d}"
        if i % 20 == 7:
            kind: Kind = "unborn"
            number = builders.mrn(family, i)
            body = builders.unborn_patient(family, given, mrn=number)
        elif i % 20 == 13:
            kind, number = "duplicate", taken_mrn
            body = builders.patient(family, given, mrn=number)
        else:
            kind, number = "new", builders.mrn(family, i)
            body = builders.patient(family, given, mrn=number)
        writes.append(Write(i, kind, given, number, body, minimal=i % 5 != 0))
    return writes


async def _send(client: httpx.AsyncClient, headers: dict[str, str], write: Write) -> Outcome:
    sent = {**headers, "Content-Type": FHIR_JSON}
    if write.minimal:
        sent["Prefer"] = "return=minimal"
    start = time.monotonic()
    try:
        response = await client.post("/fhir/Patient", json=write.body, headers=sent)
    except httpx.HTTPError as exc:
        return Outcome(write, None, failure=type(exc).__name__, seconds=time.monotonic() - start)
    patient_id = patient_id_of(response) if response.status_code == 201 else None
    return Outcome(write, response.status_code, patient_id, seconds=time.monotonic() - start)


async def _until(condition: Callable[[], bool], deadline: float, what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"burst: {what} not reached in time")
        await asyncio.sleep(0.01)


async def _burst(
    base_url: str,
    headers: dict[str, str],
    writes: list[Write],
    fault: Fault,
    *,
    concurrency: int,
    inject_after: int,
    min_outage: float,
    timeout: float,
) -> list[Outcome]:
    # three phases: before the fault (injected while writes are in flight), during
    # the outage, after the repair; phases are fed to the workers one by one
    cut = len(writes) * 2 // 5
    before, rest = writes[:cut], writes[cut:]
    during, after = rest[: len(rest) // 3], rest[len(rest) // 3 :]
    assert 0 < inject_after < len(before)
    deadline = time.monotonic() + timeout
    outcomes: list[Outcome] = []
    queue: asyncio.Queue[Write | None] = asyncio.Queue()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            while (write := await queue.get()) is not None:
                outcomes.append(await _send(client, headers, write))

        for write in before:
            queue.put_nowait(write)
        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        try:
            await _until(lambda: len(outcomes) >= inject_after, deadline, "fault point")
            await asyncio.to_thread(fault.inject)
            broken = time.monotonic()
            for write in during:
                queue.put_nowait(write)
            done = len(before) + len(during)
            await _until(lambda: len(outcomes) >= done, deadline, "end of the outage")
            await asyncio.sleep(max(0.0, min_outage - (time.monotonic() - broken)))
            await asyncio.to_thread(fault.recover)
            for write in after:
                queue.put_nowait(write)
            for _ in workers:
                queue.put_nowait(None)
            await asyncio.wait_for(asyncio.gather(*workers), deadline - time.monotonic())
        finally:
            for task in workers:
                task.cancel()
    return sorted(outcomes, key=lambda o: o.write.index)


def run_burst(
    base_url: str,
    headers: dict[str, str],
    writes: list[Write],
    fault: Fault,
    *,
    concurrency: int = 6,
    inject_after: int = 30,
    min_outage: float = 1.5,
    timeout: float = 150,
) -> list[Outcome]:
    """Send ``writes`` concurrently, inject ``fault`` after ``inject_after`` answers."""
    return asyncio.run(
        _burst(
            base_url,
            headers,
            writes,
            fault,
            concurrency=concurrency,
            inject_after=inject_after,
            min_outage=min_outage,
            timeout=timeout,
        )
    )


@dataclass(frozen=True)
class Settled:
    """The fate of every write once unknown outcomes were resolved by a retry."""

    committed: dict[int, bool]
    #: What the retries of unknown outcomes answered, by kind of write and status.
    retries: Counter[str]


def settle(client: httpx.Client, headers: dict[str, str], outcomes: list[Outcome]) -> Settled:
    """Whether each write is committed, retrying those whose outcome was unknown.

    A retried new patient answers 201 (the first attempt was lost) or 409 (it was
    committed); a retried refused write must be refused again.
    """
    committed: dict[int, bool] = {}
    retries: Counter[str] = Counter()
    for outcome in outcomes:
        write = outcome.write
        if not outcome.unknown:
            committed[write.index] = outcome.acknowledged
            continue
        retry = client.post(
            "/fhir/Patient",
            json=write.body,
            headers={**headers, "Content-Type": FHIR_JSON, "Prefer": "return=minimal"},
        )
        expected = {"new": (201, 409), "unborn": (422,), "duplicate": (409,)}[write.kind]
        assert retry.status_code in expected, (write.kind, retry.status_code, retry.text)
        retries[f"{write.kind} {retry.status_code}"] += 1
        committed[write.index] = write.kind == "new"
    return Settled(committed, retries)
