"""The load generator: an asyncio HTTP client (aiohttp on uvloop) in a process of its own.

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

Why aiohttp and not httpx: on the 2-core development machine httpx spent 1.6 to
1.9 ms of CPU per request (httpcore walks every pooled connection, with a
``poll`` system call each, on every request, and asks for the missing
``sniffio`` module each time), aiohttp 0.25 to 0.7 ms. With httpx the bare
endpoint's "saturation" was the client's ceiling (about 600 requests a second),
not the server's (about 1 900).
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from ehr_events import fhirsamples

from .cpu import snapshot, usage

FHIR_JSON = "application/fhir+json"
MRN_SYSTEM = "urn:ehr:mrn"
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
    #: The projections service, where lag watchers look for new patients.
    chart_url: str = ""


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
    #: Every ``lag_every``-th acknowledged create is watched until the chart serves it.
    lag_every: int = 0
    lag_poll_seconds: float = 0.02
    lag_timeout_seconds: float = 10.0
    #: Requests still open this long after the schedule ends count as failed.
    drain_seconds: float = 20.0
    timeout_seconds: float = 30.0
    #: Connections of the open loop: at most this many requests are in flight; a
    #: request due while all are busy waits for one (its latency still counts
    #: from the moment it was due).
    max_connections: int = 64
    #: Processes whose CPU is metered over the recorded window, by name.
    pids: dict[str, int] = field(default_factory=dict)


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
    #: Seconds from the start of the recorded window to the last recorded answer.
    last_done: float = 0.0
    #: How late the open-loop scheduler sent requests behind their due time (p99, ms).
    send_delay_p99_ms: float = 0.0
    #: CPU seconds of the load generator process during the phase (user + system).
    client_cpu_seconds: float = 0.0
    #: CPU of every metered process, the load generator and the rest of the machine.
    cpu: dict[str, Any] = field(default_factory=dict)
    #: The recorded window in ``time.monotonic()`` (the same clock in every process).
    window: tuple[float, float] = (0.0, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _patient(mrn: str, rng: random.Random) -> dict[str, Any]:
    birth_date = f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    body = fhirsamples.patient(
        rng.choice(FAMILIES),
        rng.choice(GIVEN),
        mrn=mrn,
        birth_date=birth_date,
        gender=rng.choice(("male", "female")),
    )
    body["identifier"][0]["system"] = MRN_SYSTEM
    return body


def _allergy(patient_id: str) -> dict[str, Any]:
    return fhirsamples.allergy(patient_id)


@dataclass
class Request:
    method: str
    url: str
    kwargs: dict[str, Any]


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
                {
                    "json": _patient(f"B{self.run}-{i:07d}", self.rng),
                    "headers": {"Content-Type": FHIR_JSON},
                },
            )
        raise ValueError(f"unknown request kind {kind!r}")


def _created_id(location: str) -> str | None:
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
        self.session: aiohttp.ClientSession
        self.watch_session: aiohttp.ClientSession

    def _session(self, connections: int, base_url: str) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=base_url or None,
            connector=aiohttp.TCPConnector(limit=connections, force_close=False),
            timeout=aiohttp.ClientTimeout(total=self.phase.timeout_seconds),
            trust_env=False,
        )

    async def run(self) -> PhaseResult:
        phase = self.phase
        connections = phase.max_connections if phase.mode == "rate" else phase.concurrency
        # lag watchers have connections of their own: they never wait behind the load
        target = phase.target
        async with (
            self._session(connections, target.base_url) as self.session,
            self._session(16, target.chart_url) as self.watch_session,
        ):
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
        location = ""
        try:
            async with self.session.request(request.method, request.url, **request.kwargs) as r:
                await r.read()
                code = r.status
                location = r.headers.get("Location", "")
            status = str(code)
        except (TimeoutError, aiohttp.ClientError) as exc:
            code = 0
            status = type(exc).__name__
        done = time.perf_counter()
        if not record:
            return
        result = self.result
        result.last_done = max(result.last_done, done - self.recording_from)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if not 200 <= code < 300:
            result.failed += 1
            return
        result.ok += 1
        result.latencies_ms.append((done - due) * 1000)
        if request.method == "POST" and self.phase.target.kind.startswith("create"):
            created = _created_id(location)
            if created:
                result.created_ids.append(created)
            every = self.phase.lag_every
            if every and created and result.ok % every == 0:
                task = asyncio.create_task(self._watch(created, done))
                self.watchers.add(task)
                task.add_done_callback(self.watchers.discard)

    async def _watch(self, patient_id: str, acknowledged: float) -> None:
        """Ask the chart (what the facade reads) for a new patient until it has it.

        The projections service's ``GET /chart/Patient/{id}`` without ``wait_ms``
        answers 404 until the chart holds the patient: the facade reads exactly
        this, so the first 200 is the moment the facade can show the write. Going
        to the projections service directly keeps the gateway's cost out of it.
        """
        phase = self.phase
        url = f"/chart/Patient/{patient_id}"
        deadline = acknowledged + phase.lag_timeout_seconds
        headers = self.requests.read_headers
        while time.perf_counter() < deadline:
            self.result.lag_polls += 1
            try:
                async with self.watch_session.get(url, headers=headers) as response:
                    await response.read()
                    found = response.status == 200
            except (TimeoutError, aiohttp.ClientError):
                found = False
            if found:
                # the answer's arrival: an upper bound of the moment it became visible
                self.result.lags_ms.append((time.perf_counter() - acknowledged) * 1000)
                return
            await asyncio.sleep(phase.lag_poll_seconds)
        self.result.lags_ms.append(None)

    async def _meter(self) -> None:
        """CPU of the metered processes and of this one over the recorded window."""
        await asyncio.sleep(max(0.0, self.recording_from - time.perf_counter()))
        before, client_before = snapshot(self.phase.pids), _cpu()
        start = time.monotonic()
        await asyncio.sleep(max(0.0, self.recording_until - time.perf_counter()))
        after, client = snapshot(self.phase.pids), _cpu() - client_before
        self.result.window = (start, time.monotonic())
        self.result.client_cpu_seconds = client
        self.result.cpu = usage(before, after, {"load-generator": client}).to_dict()

    async def _open_loop(self) -> None:
        phase = self.phase
        start = time.perf_counter() + 0.05
        self.recording_from = start + phase.warmup_seconds
        self.recording_until = self.recording_from + phase.seconds
        meter = asyncio.create_task(self._meter())
        total = int((phase.warmup_seconds + phase.seconds) * phase.rate)
        tasks: list[asyncio.Task[None]] = []
        delays: list[float] = []
        for i in range(total):
            due = start + i / phase.rate
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
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
        await meter
        self.result.send_delay_p99_ms = _percentile(delays, 99) * 1000

    async def _closed_loop(self) -> None:
        phase = self.phase
        start = time.perf_counter()
        self.recording_from = start + phase.warmup_seconds
        self.recording_until = self.recording_from + phase.seconds
        counter = iter(range(10**9))
        meter = asyncio.create_task(self._meter())

        async def worker() -> None:
            while True:
                now = time.perf_counter()
                if now >= self.recording_until:
                    return
                await self._send(next(counter), now)

        await asyncio.gather(*(worker() for _ in range(phase.concurrency)))
        await meter


def run_phase(phase: Phase, seed: int = 0) -> dict[str, Any]:
    """Run one phase to its end (the entry point of the load process)."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    result = runner(Driver(phase, seed).run())
    return result.to_dict()
