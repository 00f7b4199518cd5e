"""The load generator: an asyncio httpx client, run in a process of its own.

Two ways to drive a target:

* **fixed rate** (open loop): request *i* is due at ``start + i / rate`` whether or
  not earlier ones have answered, and its latency is measured from that scheduled
  moment, not from when it was actually sent. A server that stalls therefore shows
  its stall in every request that was due meanwhile (no coordinated omission).
* **saturation** (closed loop): ``concurrency`` workers each send the next request
  as soon as the previous one answers; the throughput is what the server sustains.

Each phase has a short warm-up whose requests are sent but not recorded. The
process's own CPU time (``getrusage``) is reported with every result, so the
cost of the load generator is visible next to the figures it produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

FHIR_JSON = "application/fhir+json"
MRN_SYSTEM = "urn:ehr:mrn"
MR_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
#: Family names of generated patients: a search for one of them finds a few patients.
FAMILIES = tuple(
    f"{a}{b}"
    for a in ("Ash", "Birch", "Cedar", "Dale", "Elm", "Fir", "Glen", "Heath", "Ivy", "Juniper")
    for b in ("ford", "wood", "more", "ley", "ton", "by", "well", "stone", "field", "brook")
)
GIVEN = ("Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ira", "Jo")


@dataclass(frozen=True)
class Target:
    """What to call: a kind of request against a base URL."""

    base_url: str
    #: ``create_patient``, ``create_allergy``, ``read_patient``, ``search_patient``,
    #: ``bare_get`` or ``bare_post``.
    kind: str
    token: str = ""
    #: ``Prefer: return=minimal`` on creates (no wait for the chart).
    minimal: bool = False
    #: Patient ids for reads and for allergies.
    patient_ids: tuple[str, ...] = ()
    #: Family names that searches ask for.
    families: tuple[str, ...] = FAMILIES


@dataclass(frozen=True)
class Phase:
    """How hard and how long to drive a target."""

    name: str
    target: Target
    #: ``rate`` (open loop at ``rate`` requests a second) or ``saturate`` (closed loop).
    mode: str
    seconds: float
    warmup_seconds: float = 2.0
    rate: float = 0.0
    concurrency: int = 16
    #: Every ``lag_every``-th acknowledged create is watched until the facade shows it.
    lag_every: int = 0
    lag_poll_seconds: float = 0.01
    lag_timeout_seconds: float = 10.0
    #: Requests still open this long after the schedule ends count as failed.
    drain_seconds: float = 20.0
    timeout_seconds: float = 30.0
    max_connections: int = 256


@dataclass
class PhaseResult:
    name: str
    mode: str
    offered_rate: float
    seconds: float
    ok: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    #: Latencies of successful recorded requests, in milliseconds.
    latencies_ms: list[float] = field(default_factory=list)
    #: Event-to-chart lag of the watched writes, in milliseconds (None: never seen).
    lags_ms: list[float | None] = field(default_factory=list)
    lag_polls: int = 0
    #: Ids of created resources (the reads of later phases use them).
    created_ids: list[str] = field(default_factory=list)
    #: How late the open-loop scheduler sent requests behind their due time (p99, ms).
    send_delay_p99_ms: float = 0.0
    #: CPU seconds of the load generator process during the phase (user + system).
    client_cpu_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _patient(mrn: str, rng: random.Random) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"type": MR_TYPE, "system": MRN_SYSTEM, "value": mrn}],
        "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVEN)]}],
        "gender": rng.choice(("male", "female")),
        "birthDate": f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "telecom": [{"system": "phone", "value": "+1 555 0100", "use": "home"}],
        "address": [{"line": ["12 Lantern Row"], "city": "Springfield", "postalCode": "01010"}],
    }


def _allergy(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance",
        "patient": {"reference": f"Patient/{patient_id}"},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                    "code": "active",
                }
            ]
        },
        "verificationStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                    "code": "confirmed",
                }
            ]
        },
        "category": ["medication"],
        "criticality": "high",
        "code": {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "91936005",
                    "display": "Allergy to penicillin",
                }
            ]
        },
        "reaction": [{"manifestation": [{"text": "Hives"}], "severity": "moderate"}],
    }


@dataclass
class Request:
    method: str
    url: str
    kwargs: dict[str, Any]
    mrn: str | None = None


class Requests:
    """Builds the i-th request of a target (in the load process: its cost is ours)."""

    def __init__(self, target: Target, seed: int) -> None:
        self.target = target
        self.rng = random.Random(seed)
        self.run = uuid.uuid4().hex[:8]
        auth = {"Authorization": f"Bearer {target.token}"} if target.token else {}
        self.read_headers = auth
        self.write_headers = {**auth, "Content-Type": FHIR_JSON}
        if target.minimal:
            self.write_headers["Prefer"] = "return=minimal"

    def make(self, i: int) -> Request:
        kind = self.target.kind
        if kind == "create_patient":
            mrn = f"B{self.run}-{i:07d}"
            return Request(
                "POST",
                "/fhir/Patient",
                {"json": _patient(mrn, self.rng), "headers": self.write_headers},
                mrn=mrn,
            )
        if kind == "create_allergy":
            patient_id = self.rng.choice(self.target.patient_ids)
            return Request(
                "POST",
                "/fhir/AllergyIntolerance",
                {"json": _allergy(patient_id), "headers": self.write_headers},
            )
        if kind == "read_patient":
            patient_id = self.rng.choice(self.target.patient_ids)
            return Request("GET", f"/fhir/Patient/{patient_id}", {"headers": self.read_headers})
        if kind == "search_patient":
            params = {"family": self.rng.choice(self.target.families), "_count": "10"}
            return Request("GET", "/fhir/Patient", {"params": params, "headers": self.read_headers})
        if kind == "bare_get":
            return Request("GET", "/bare", {})
        if kind == "bare_post":
            return Request(
                "POST",
                "/bare",
                {"json": _patient(f"B{self.run}-{i:07d}", self.rng), "headers": {"Content-Type": FHIR_JSON}},
            )
        raise ValueError(f"unknown request kind {kind!r}")


def _created_id(response: httpx.Response) -> str | None:
    location = response.headers.get("location", "")
    # .../fhir/<Type>/<id>/_history/<version>
    parts = location.rstrip("/").split("/")
    if "_history" in parts:
        return parts[parts.index("_history") - 1]
    return None


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class Driver:
    """Runs one phase on the current event loop."""

    def __init__(self, phase: Phase, seed: int) -> None:
        self.phase = phase
        self.requests = Requests(phase.target, seed)
        self.result = PhaseResult(
            name=phase.name,
            mode=phase.mode,
            offered_rate=phase.rate if phase.mode == "rate" else 0.0,
            seconds=phase.seconds,
        )
        self.recording_from = 0.0
        self.recording_until = float("inf")
        self.watchers: set[asyncio.Task[None]] = set()
        self.client: httpx.AsyncClient

    async def run(self) -> PhaseResult:
        phase = self.phase
        limits = httpx.Limits(
            max_connections=phase.max_connections, max_keepalive_connections=phase.max_connections
        )
        async with httpx.AsyncClient(
            base_url=phase.target.base_url,
            limits=limits,
            timeout=phase.timeout_seconds,
            trust_env=False,
        ) as self.client:
            if phase.mode == "rate":
                await self._open_loop()
            else:
                await self._closed_loop()
            if self.watchers:
                await asyncio.gather(*self.watchers, return_exceptions=True)
        return self.result

    def _recording(self, moment: float) -> bool:
        return self.recording_from <= moment < self.recording_until

    async def _send(self, i: int, due: float) -> None:
        request = self.requests.make(i)
        record = self._recording(due)
        try:
            response = await self.client.request(request.method, request.url, **request.kwargs)
            status = str(response.status_code)
        except httpx.HTTPError as exc:
            response = None
            status = type(exc).__name__
        done = time.perf_counter()
        if not record:
            return
        result = self.result
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if response is None or response.status_code >= 300:
            result.failed += 1
            return
        result.ok += 1
        result.latencies_ms.append((done - due) * 1000)
        if request.method == "POST" and self.phase.target.kind.startswith("create"):
            created = _created_id(response)
            if created:
                result.created_ids.append(created)
            every = self.phase.lag_every
            if every and request.mrn and result.ok % every == 0:
                task = asyncio.create_task(self._watch(request.mrn, done))
                self.watchers.add(task)
                task.add_done_callback(self.watchers.discard)

    async def _watch(self, mrn: str, acknowledged: float) -> None:
        """Poll the facade's identifier search until the new patient is there."""
        phase = self.phase
        params = {"identifier": f"{MRN_SYSTEM}|{mrn}"}
        deadline = acknowledged + phase.lag_timeout_seconds
        headers = self.requests.read_headers
        while time.perf_counter() < deadline:
            self.result.lag_polls += 1
            try:
                response = await self.client.get("/fhir/Patient", params=params, headers=headers)
                found = response.status_code == 200 and response.json().get("total", 0) >= 1
            except (httpx.HTTPError, ValueError):
                found = False
            if found:
                # the answer's arrival: an upper bound of the moment it became visible
                self.result.lags_ms.append((time.perf_counter() - acknowledged) * 1000)
                return
            await asyncio.sleep(phase.lag_poll_seconds)
        self.result.lags_ms.append(None)

    async def _open_loop(self) -> None:
        phase = self.phase
        start = time.perf_counter() + 0.05
        self.recording_from = start + phase.warmup_seconds
        self.recording_until = self.recording_from + phase.seconds
        total = int((phase.warmup_seconds + phase.seconds) * phase.rate)
        tasks: list[asyncio.Task[None]] = []
        delays: list[float] = []
        cpu_start: float | None = None
        for i in range(total):
            due = start + i / phase.rate
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            if cpu_start is None and due >= self.recording_from:
                cpu_start = _cpu()
            if due >= self.recording_from:
                delays.append(time.perf_counter() - due)
            tasks.append(asyncio.create_task(self._send(i, due)))
        _, pending = await asyncio.wait(tasks, timeout=phase.drain_seconds) if tasks else ((), ())
        for task in pending:
            task.cancel()
        # what never answered was due inside the window: it failed
        self.result.failed += len(pending)
        if pending:
            self.result.statuses["unfinished"] = len(pending)
        self.result.client_cpu_seconds = _cpu() - (cpu_start or _cpu())
        self.result.send_delay_p99_ms = _percentile(delays, 99) * 1000

    async def _closed_loop(self) -> None:
        phase = self.phase
        start = time.perf_counter()
        self.recording_from = start + phase.warmup_seconds
        self.recording_until = self.recording_from + phase.seconds
        counter = iter(range(10**9))
        cpu_start: list[float] = []

        async def worker() -> None:
            while True:
                now = time.perf_counter()
                if now >= self.recording_until:
                    return
                if not cpu_start and now >= self.recording_from:
                    cpu_start.append(_cpu())
                await self._send(next(counter), now)

        await asyncio.gather(*(worker() for _ in range(phase.concurrency)))
        self.result.client_cpu_seconds = _cpu() - (cpu_start[0] if cpu_start else _cpu())


def run_phase(phase: Phase, seed: int = 0) -> dict[str, Any]:
    """Run one phase to its end (the entry point of the load process)."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    with contextlib.suppress(Exception):
        import gc

        gc.freeze()
    result = runner(Driver(phase, seed).run())
    return result.to_dict()
