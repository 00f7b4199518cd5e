"""``make bench``: the platform under load, held against its physical baselines.

Order of a run (each step bounded in time; about ten minutes on 2 cores):

1. the database's single-row commit rate (SQLite with the platform's pragmas, or
   PostgreSQL with psycopg);
2. the bare endpoint (the services' HTTP stack, nothing behind it) starts and stays
   up: a window of it, driven by the same load generator in the same mode, comes
   right before every round of every platform phase (its paired baseline);
3. the platform, every process as in the Procfile (``ehr_events.devplatform``),
   with the gateway's rate limits raised (see :data:`LIMITS_ENV`);
4. writes at saturation: FHIR create Patient and AllergyIntolerance acknowledged
   once stored, then the default create that waits for the chart;
5. the broker's round trip (``acks=all`` produce to a consumer with the projection
   runner's settings), the floor of the event-to-chart lag, then the lag itself at
   a moderate write rate;
6. reads at saturation: FHIR read by id, search by family name;
7. the same writes and reads at the fixed rate, last: a rate the platform cannot
   serve leaves a backlog (and open connections) behind;
8. the services stop (the broker stays); 100 000 ``PatientRegisteredV1`` events are
   published with ``acks=all`` (timed: the broker's produce rate) and
   ``python -m projections rebuild chart`` replays the topic into a fresh read model.

Between platform phases the run waits until the platform is idle again, so one
phase's backlog does not land on the next. The figures are printed as a table
and written to ``var/bench/<timestamp>.json`` and ``var/bench/latest.json``; the
ratios are set beside those of the previous run of the same scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import platform as host
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ehr_events.devinfra import free_port, wait_for_port
from ehr_events.devplatform import Platform

from . import baselines, broker, report
from .cpu import CORES, SpeedProbe, snapshot, usage, wait_for_quiet_machine, wait_quiet
from .load import Phase, Target, run_phase
from .profile import Recorder, summarize
from .rebuild import run_rebuild
from .report import Figure, percentile

#: The gateway limits each caller to 100 requests a second (burst 200) and each
#: client address to 300 (burst 600). One benchmark client is one caller at one
#: address, so the run raises both through the gateway's own settings
#: (``GatewaySettings.rate_per_subject`` and friends); no code changes.
LIMITS_ENV = {
    "EHR_RATE_PER_SUBJECT": "1000000",
    "EHR_BURST_PER_SUBJECT": "1000000",
    "EHR_RATE_PER_ADDRESS": "1000000",
    "EHR_BURST_PER_ADDRESS": "1000000",
}

TARGET_RATE = 200.0
WRITE_P99_MS = 50.0
READ_P99_MS = 15.0
LAG_P99_MS = 500.0
REBUILD_EPS = 20_000.0

#: Cores the platform may use once started and doing nothing (its pollers use
#: about 0.15): until then its idle level is not measured.
STARTED_AT_MOST = 0.5

#: The processes the write and read phases are profiled in (``--profile``).
WRITE_PATH = (
    "gateway",
    "records",
    "records-relay",
    "chart-projector",
    "audit-projector",
    "gateway-relay",
)
READ_PATH = ("gateway", "projections")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make bench ARGS=...", description="Benchmark the platform through the gateway."
    )
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument(
        "--rebuild-events",
        type=int,
        default=100_000,
        help="events the rebuild replays (1000000 for the big one)",
    )
    parser.add_argument(
        "--million", action="store_const", const=1_000_000, dest="rebuild_events",
        help="rebuild from 1 000 000 events",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=float, default=TARGET_RATE, help="fixed offered rate, requests/s"
    )
    parser.add_argument(
        "--rate-seconds", type=float, default=10.0, help="recorded seconds at the fixed rate"
    )
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="rounds of each phase (saturation, lag, fixed rate), taken in turns, each after "
        "a bare window in the same mode; a figure is the median of its rounds'",
    )  # fmt: skip
    parser.add_argument(
        "--saturation-seconds", type=float, default=8.0, help="recorded seconds at saturation"
    )
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument(
        "--concurrency", type=int, default=16, help="closed-loop workers at saturation"
    )
    parser.add_argument("--lag-rate", type=float, default=50.0, help="write rate of the lag phase")
    parser.add_argument("--lag-seconds", type=float, default=30.0)
    parser.add_argument(
        "--lag-every", type=int, default=4, help="watch every n-th write of the lag phase"
    )
    parser.add_argument(
        "--rebuild-max-seconds", type=float, default=100.0,
        help="stop the rebuild after this long and report the rate so far (0: no limit)",
    )  # fmt: skip
    parser.add_argument(
        "--rebuild-workers", type=int, default=None,
        help="processes of the rebuild (default: the command's own, one per partition)",
    )  # fmt: skip
    parser.add_argument(
        "--bare-seconds", type=float, default=6.0, help="recorded seconds per bare phase"
    )
    parser.add_argument("--drain-seconds", type=float, default=10.0,
                        help="how long answers due in a fixed-rate window are awaited")  # fmt: skip
    parser.add_argument(
        "--profile", action="store_true",
        help="py-spy the busiest processes of the write, read and rebuild phases",
    )  # fmt: skip
    parser.add_argument(
        "--wait-quiet", type=float, default=60.0,
        help="wait up to this long for the machine to be idle before starting",
    )  # fmt: skip
    parser.add_argument(
        "--skip", type=lambda text: [s for s in text.split(",") if s], default=[],
        help="steps to leave out, comma-separated: bare,db,broker,writes,lag,reads,fixed,rebuild "
        "(their figures print as '-'; no comparison with the previous run)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the platform's var folder")
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short phases and 10 000 events: a smoke run, not figures",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.quick:
        args.rate_seconds, args.saturation_seconds, args.lag_seconds = 3.0, 3.0, 4.0
        args.warmup_seconds, args.bare_seconds, args.drain_seconds = 1.0, 3.0, 5.0
        args.rounds = 1
        if args.rebuild_events == 100_000:
            args.rebuild_events = 10_000
    return args


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def postgres_url() -> str:
    """A fresh benchmark database: ``scripts/postgres-setup.sh`` with ``ehr_bench``."""
    import psycopg

    env = {**os.environ, "EHR_PG_DATABASES": "ehr_bench"}
    out = subprocess.run(
        ["bash", "scripts/postgres-setup.sh"], env=env, check=True, capture_output=True, text=True
    )
    url = out.stdout.strip().splitlines()[-1]
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        for schema in (
            "identity",
            "records",
            "gateway",
            "projections",
            "bench_rebuild",
            "bench_baseline",
        ):
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return url


class Run:
    """One benchmark run: its settings, its phases' results, its figures."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.timestamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.work = Path(tempfile.mkdtemp(prefix="ehr-bench-"))
        self.database_url = ""
        self.phases: dict[str, dict[str, Any]] = {}
        self.baselines: dict[str, Any] = {}
        self.rebuild: dict[str, Any] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        # collapsed stacks stay beside the figures (py-spy's raw format: flamegraph input)
        self.recorder = Recorder(args.out / f"profiles-{self.timestamp}")
        self.platform: Platform | None = None
        self.token = ""
        self.token_at = 0.0
        self.idle_level = 0.0
        self.patient_ids: list[str] = []
        #: the bare endpoint's server and its windows, by ``<kind>.<mode>``
        self.bare_server: subprocess.Popen[bytes] | None = None
        self.bare_url = ""
        self.bare_rounds: dict[str, list[dict[str, Any]]] = {}
        self.load = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self.probe = SpeedProbe()

    # -- the load generator ---------------------------------------------------------
    def drive(
        self, name: str, target: Target, mode: str, *, profile: tuple[str, ...] = (), **kw: Any
    ) -> dict[str, Any]:
        """Run one phase in the load process (and py-spy some processes meanwhile)."""
        args = self.args
        seconds = kw.pop(
            "seconds", args.rate_seconds if mode == "rate" else args.saturation_seconds
        )
        phase = Phase(
            name=name,
            target=target,
            mode=mode,
            seconds=seconds,
            warmup_seconds=kw.pop("warmup_seconds", args.warmup_seconds),
            rate=kw.pop("rate", args.rate if mode == "rate" else 0.0),
            concurrency=kw.pop("concurrency", args.concurrency),
            pids=self.pids(),
            drain_seconds=args.drain_seconds,
            **kw,
        )
        how = f"{phase.rate:g}/s" if mode == "rate" else f"{phase.concurrency} workers"
        say(f"  {name}: {how}, {phase.warmup_seconds:g}+{seconds:g}s")
        future = self.load.submit(run_phase, phase, len(self.phases))
        if profile and args.profile and self.platform is not None:
            time.sleep(phase.warmup_seconds + 0.1)
            pids = {n: p.pid for n, p in self.platform.processes.items() if n in profile}
            self.recorder.start(name, pids, seconds)
        result = future.result()
        result = summarize_phase(result)
        result["probe_ms"] = self.probe.median(*result["window"])
        self.phases[name] = result
        if self.recorder.running:
            for key, path in self.recorder.finish().items():
                self.profiles[key] = summarize(path)
        busiest, share = _busiest(result)
        say(
            f"    {result['ok']} ok, {result['failed']} failed, {result['throughput']:.1f}/s, "
            f"p50 {report.fmt(result['p50_ms'], 'ms')} p99 {report.fmt(result['p99_ms'], 'ms')}; "
            f"busiest {busiest} {100 * share:.0f}% of a core"
        )
        return result

    def pids(self) -> dict[str, int]:
        if self.platform is None:
            return {}
        return {n: p.pid for n, p in self.platform.processes.items() if p.poll() is None}

    def settle(self) -> None:
        """Wait until the platform has worked off what the last phase left behind."""
        waited = wait_quiet(self.pids(), level=self.idle_level + 0.15, max_seconds=20)
        if waited > 1:
            say(f"    (platform busy for {waited:.1f}s after the phase)")

    # -- steps ----------------------------------------------------------------------
    def start_bare(self) -> None:
        """The bare endpoint's server, up for the whole run: each platform phase's round
        is preceded by a bare phase in the same mode (see :meth:`in_rounds`)."""
        say("bare endpoint (the services' HTTP stack, nothing behind it)")
        port = free_port()
        log_dir = self.work / "bare" / "log"
        log_dir.mkdir(parents=True)
        self.bare_server = subprocess.Popen(
            [sys.executable, "-m", "bench.bare", "--port", str(port), "--log-dir", str(log_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port)
        self.bare_url = f"http://127.0.0.1:{port}"
        say(f"  up on {self.bare_url}")

    def stop_bare(self) -> None:
        if self.bare_server is not None:
            self.bare_server.terminate()
            self.bare_server.wait(timeout=10)
            self.bare_server = None

    def drive_bare(self, kind: str, mode: str, rate: float | None = None) -> dict[str, Any]:
        """One window of the bare endpoint (``bare_post`` or ``bare_get``) in ``mode``
        (at ``rate``, by default ``--rate``); kept among all of that kind, mode and
        rate, whose median is the phases table's row."""
        assert self.bare_server is not None
        args = self.args
        if mode == "rate":
            rate = args.rate if rate is None else rate
        name = bare_name(kind, mode, rate, args.rate)
        phase = Phase(
            name=name,
            target=Target(self.bare_url, kind),
            mode=mode,
            seconds=args.bare_seconds,
            warmup_seconds=1.0,
            rate=rate or 0.0,
            concurrency=args.concurrency,
            # the bare server is the only metered process
            pids={"bare-endpoint": self.bare_server.pid},
            drain_seconds=args.drain_seconds,
        )
        seed = 10_000 + sum(len(windows) for windows in self.bare_rounds.values())
        result = summarize_phase(self.load.submit(run_phase, phase, seed).result())
        result["probe_ms"] = self.probe.median(*result["window"])
        self.bare_rounds.setdefault(name, []).append(result)
        say(
            f"    (bare {mode}: {result['throughput']:.0f}/s p50 "
            f"{report.fmt(result['p50_ms'], 'ms')} p99 {report.fmt(result['p99_ms'], 'ms')})"
        )
        return result

    def database_baselines(self) -> None:
        say("database: single-row commits")
        if self.database_url:
            self.baselines["commit"] = baselines.postgres_commit_rate(self.database_url)
            self.baselines["commit"]["what"] = "PostgreSQL, psycopg"
        else:
            folder = self.work / "baseline"
            normal = baselines.sqlite_commit_rate(folder, synchronous="NORMAL")
            full = baselines.sqlite_commit_rate(folder, synchronous="FULL")
            normal["what"] = "SQLite WAL synchronous=NORMAL (read models)"
            full["what"] = "SQLite WAL synchronous=FULL (event stores)"
            self.baselines["commit_read_models"] = normal
            # a write commits in an event store: that is the write path's floor
            self.baselines["commit"] = full
        for key in ("commit_read_models", "commit"):
            if key in self.baselines:
                b = self.baselines[key]
                say(f"  {b['what']}: {b['per_second']:,.0f} commits/s, p99 {b['p99_ms']:.2f} ms")

    def start_platform(self) -> None:
        say("platform: broker and every service (devplatform)")
        extra = dict(LIMITS_ENV)
        if self.database_url:
            extra["EHR_DATABASE_URL"] = self.database_url
        self.platform = Platform(var_dir=self.work / "var", extra_env=extra)
        started = time.monotonic()
        self.platform.start()
        say(f"  ready in {time.monotonic() - started:.1f}s; gateway {self.platform.gateway_url}")
        self.login()
        # what the platform uses doing nothing (pollers): the level "idle" means. The
        # relays and projectors, at a lower priority, may still be starting (imports,
        # topics, group joins) when the HTTP services answer: that ends first
        waited = wait_quiet(self.pids(), level=STARTED_AT_MOST, max_seconds=30, window=1.0)
        if waited > 1.5:
            say(f"  waited {waited:.0f}s for the background processes to finish starting")
        before = snapshot(self.pids())
        time.sleep(2.0)
        idle = usage(before, snapshot(self.pids()))
        self.idle_level = sum(idle.processes.values())
        self.baselines["platform_idle_cores"] = self.idle_level
        say(
            f"  idle: {self.idle_level:.2f} cores busy; rest of the machine {idle.foreign:.2f} cores"
        )

    def login(self) -> str:
        assert self.platform is not None
        if self.token and time.monotonic() - self.token_at < 600:
            return self.token
        response = httpx.post(
            f"{self.platform.gateway_url}/auth/token",
            data={"grant_type": "password", "username": "physician", "password": "demo"},
            timeout=30,
        )
        response.raise_for_status()
        self.token, self.token_at = response.json()["access_token"], time.monotonic()
        return self.token

    def target(self, kind: str, **kw: Any) -> Target:
        assert self.platform is not None
        return Target(
            self.platform.gateway_url,
            kind,
            self.login(),
            chart_url=f"http://127.0.0.1:{self.platform.ports['projections']}",
            **kw,
        )

    def broker_round_trip(self) -> None:
        assert self.platform is not None
        say("broker: round trip (acks=all produce, projection runner's consumer settings)")
        bootstrap = f"127.0.0.1:{self.platform.ports['broker']}"
        trip = asyncio.run(broker.round_trip(bootstrap))
        trips = trip.pop("round_trip_ms")
        acks = trip.pop("ack_ms")
        trip.update(
            round_trip_p50_ms=percentile(trips, 50),
            round_trip_p99_ms=percentile(trips, 99),
            ack_p99_ms=percentile(acks, 99),
            received=len(trips),
        )
        self.baselines["broker_round_trip"] = trip
        say(
            f"  produce ack p50 {trip['ack_p50_ms']:.1f} ms; round trip p50 "
            f"{report.fmt(trip['round_trip_p50_ms'], 'ms')} p99 {report.fmt(trip['round_trip_p99_ms'], 'ms')}"
        )

    def writes(self) -> None:
        say(
            f"writes at saturation, {self.args.rounds} round(s) in turn (Prefer: return=minimal: "
            "acknowledged once stored; default return: answered once the chart shows it)"
        )

        def ids() -> tuple[str, ...]:
            return tuple(self.patient_ids[:5000])  # the patients created so far

        # patients first: the allergies and the reads use their ids
        self.in_rounds(
            [
                ("patient.create.saturate", lambda: self.target("create_patient", minimal=True),
                 WRITE_PATH),
                ("allergy.create.saturate",
                 lambda: self.target("create_allergy", minimal=True, patient_ids=ids()), ()),
                ("patient.create-full.saturate", lambda: self.target("create_patient"), ()),
            ],
            "saturate",
        )  # fmt: skip

    def in_rounds(
        self,
        plan: list[tuple[str, Callable[[], Target], tuple[str, ...]]],
        mode: str,
        **drive: Any,
    ) -> None:
        """Run the phases of ``plan`` in ``--rounds`` rounds, in turn, each then settled;
        each phase's figures are the median of its rounds (:func:`median_round`).

        Right before each round of a phase, the bare endpoint runs a window in the
        same mode (``bare_post`` before writes, ``bare_get`` before reads) and at the
        same rate: its baseline, paired round by round (see :func:`paired_ratio`). A
        phase's target is built when it runs (the patients created so far, a fresh
        token), and its processes are profiled (with ``--profile``) in the first
        round. ``drive`` goes to :meth:`drive` (rate, seconds, lag watching). A
        phase that watches the lag has its lag taken over the samples of every
        round together (:func:`lag_percentiles`).
        """
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in plan}
        paired: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in plan}
        lags: dict[str, list[float | None]] = {name: [] for name, _, _ in plan}
        for round_number in range(self.args.rounds):
            for name, make_target, profile in plan:
                target = make_target()
                if self.bare_server is not None:
                    bare = self.drive_bare(bare_kind(target.kind), mode, drive.get("rate"))
                    paired[name].append(bare)
                result = self.drive(
                    name, target, mode, profile=profile if round_number == 0 else (), **drive
                )
                created = result.pop("created_ids")
                if target.kind == "create_patient":
                    self.patient_ids += created
                lags[name] += result.pop("lag_values_ms", [])
                rounds[name].append(self.phases.pop(name))
                self.settle()
        for name, results in rounds.items():
            self.phases[name] = median_round(results)
            if lags[name]:
                self.phases[name].update(lag_percentiles(lags[name]))
            if paired[name]:
                self.phases[name]["paired"] = median_round(paired[name])

    def fixed_rate(self) -> None:
        """The fixed-rate phases, last: where the platform cannot keep up, the backlog
        (and the connections the gateway opened for it) would weigh on what follows."""
        args = self.args
        skip = set(args.skip)
        say(f"fixed rate {args.rate:g}/s, {args.rounds} round(s) of every phase in turn")
        if "reads" not in skip:
            self.ensure_patients()
        ids = tuple(self.patient_ids[:5000])
        plan: list[tuple[str, Callable[[], Target], tuple[str, ...]]] = []
        if "writes" not in skip:
            plan.append(
                ("patient.create.rate", lambda: self.target("create_patient", minimal=True), ())
            )
            plan.append(
                (
                    "allergy.create.rate",
                    lambda: self.target("create_allergy", minimal=True, patient_ids=ids),
                    (),
                )
            )
        if "reads" not in skip:
            plan.append(
                ("patient.read.rate", lambda: self.target("read_patient", patient_ids=ids), ())
            )
            plan.append(
                ("patient.search.rate", lambda: self.target("search_patient", patient_ids=ids), ())
            )
        self.in_rounds(plan, "rate")

    def lag(self) -> None:
        """Creates at a low fixed rate, some watched until the chart shows them, in
        ``--rounds`` rounds that share ``--lag-seconds``. Right before, the broker's
        round trip (the lag's baseline); right before each round, the bare endpoint
        at the same rate (its creates' baseline, paired round by round as in
        :meth:`in_rounds`). The lag's percentiles are taken over the watched writes of
        every round together, its creates' latencies as the median of the rounds'."""
        args = self.args
        if "broker" not in set(args.skip):
            self.broker_round_trip()
        seconds = args.lag_seconds / args.rounds
        say(
            f"event-to-chart lag: creates at {args.lag_rate:g}/s, every {args.lag_every}th "
            f"watched, {args.rounds} round(s) of {seconds:g}s"
        )
        self.in_rounds(
            [
                ("lag", lambda: self.target("create_patient", minimal=True),
                 ("records-relay", "chart-projector")),
            ],
            "rate",
            rate=args.lag_rate,
            seconds=seconds,
            lag_every=args.lag_every,
        )  # fmt: skip

    def ensure_patients(self) -> None:
        """Patients to read, when the write phases did not run."""
        if len(self.patient_ids) < 200:
            say("  (creating patients to read)")
            result = self.drive(
                "setup.patients", self.target("create_patient", minimal=True), "saturate",
                seconds=5, warmup_seconds=0,
            )  # fmt: skip
            self.patient_ids += result.pop("created_ids")
            self.settle()

    def reads(self) -> None:
        say(f"reads at saturation, {self.args.rounds} round(s) in turn")
        self.ensure_patients()
        ids = tuple(self.patient_ids[:5000])
        self.in_rounds(
            [
                ("patient.read.saturate",
                 lambda: self.target("read_patient", patient_ids=ids), READ_PATH),
                ("patient.search.saturate",
                 lambda: self.target("search_patient", patient_ids=ids), READ_PATH),
            ],
            "saturate",
        )  # fmt: skip

    def rebuild_chart(self) -> None:
        assert self.platform is not None
        args = self.args
        say("rebuild: the services stop, the broker stays")
        self.platform.stop(*[n for n in list(self.platform.processes) if n != "broker"])
        bootstrap = f"127.0.0.1:{self.platform.ports['broker']}"
        say(f"  publishing {args.rebuild_events:,} PatientRegisteredV1 events (acks=all)")
        produced = asyncio.run(broker.seed(bootstrap, args.rebuild_events))
        self.baselines["broker_produce"] = produced
        say(
            f"  produced at {produced['per_second']:,.0f}/s "
            f"({produced['mean_value_bytes']:.0f} B value + {produced['mean_header_bytes']:.0f} B headers)"
        )
        say("  python -m projections rebuild chart (fresh read model)")
        env = self.platform.env()

        def profile_rebuild(pid: int) -> None:
            # from the first applied batch on: process start and group join are not the rebuild
            if args.profile:
                self.recorder.start("rebuild", {"rebuild": pid}, 20, subprocesses=True)

        self.rebuild = run_rebuild(
            env,
            self.work / "rebuild",
            database_url=self.database_url,
            max_seconds=args.rebuild_max_seconds or float("inf"),
            on_first_batch=profile_rebuild,
            workers=args.rebuild_workers,
        )
        if self.recorder.running:
            for key, path in self.recorder.finish().items():
                self.profiles[key] = summarize(path)
        r = self.rebuild
        r["probe_ms"] = self.probe.median(*r.pop("window"))
        say(
            f"  {r['events']:,} events in {r['wall_seconds']:.1f}s: applying "
            f"{r['applying_per_second']:,.0f}/s, wall {r['wall_per_second']:,.0f}/s"
        )
        if r.get("applying_machine_cores") is not None:
            say(
                f"  while applying: machine {r['applying_machine_cores']:.2f} cores busy, "
                f"the rebuild's processes {r['applying_rebuild_cores']:.2f}, "
                f"{r['applying_rebuild_cpu_us_per_event']:.0f} µs of their CPU per event"
            )

    # -- the whole run --------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        args = self.args
        self.load.submit(time.sleep, 0).result()  # the load process is up and warm
        if args.wait_quiet > 0:
            waited, level = wait_for_quiet_machine(args.wait_quiet)
            self.baselines["machine_before_start_cores"] = level
            if level > 0.25:
                say(
                    f"the machine stays busy ({level:.2f} cores used by others): figures will show it"
                )
            elif waited > 3:
                say(f"waited {waited:.0f}s for the machine to be idle")
        if args.postgres:
            self.database_url = postgres_url()
        self.probe.start()
        skip = set(args.skip)
        if "db" not in skip:
            self.database_baselines()
        try:
            if "bare" not in skip:
                self.start_bare()
            self.start_platform()
            steps = (
                ("writes", self.writes),
                ("lag", self.lag),
                ("reads", self.reads),
                ("fixed", self.fixed_rate),
                ("rebuild", self.rebuild_chart),
            )
            for name, step in steps:
                if name not in skip:
                    step()
            if "lag" in skip and "broker" not in skip:
                self.broker_round_trip()
        finally:
            self.stop_bare()
            # the phases table's bare rows: the median of every window of a kind and mode
            for name, results in self.bare_rounds.items():
                self.phases[name] = median_round(results)
            if self.platform is not None:
                self.platform.stop()
            self.load.shutdown()
            self.probe.stop()
        return self.results()

    def results(self) -> dict[str, Any]:
        figures = build_figures(self)
        others = [
            (r.get("cpu") or {}).get("foreign_cores_busy", 0.0)
            for name, r in self.phases.items()
            if not name.startswith("bare")
        ]
        data: dict[str, Any] = {
            "meta": {
                "timestamp": self.timestamp,
                "backend": "postgres" if self.database_url else "sqlite",
                "scenario": scenario(self.args),
                "cores": CORES,
                "host": host.node(),
                "python": sys.version.split()[0],
                "commit": _git_commit(),
                "duration_seconds": round(time.monotonic() - self.started, 1),
                "rate_limits_env": LIMITS_ENV,
                "load_generator": "aiohttp on uvloop, one spawned process",
                "others_mean_cores": sum(others) / len(others) if others else 0.0,
                "others_max_cores": max(others, default=0.0),
                "probe_median_ms": self.probe.median(0.0, math.inf),
                "probe_phase_range_ms": _probe_range(self.phases),
            },
            "figures": [f.to_dict() for f in figures],
            "baselines": self.baselines,
            "phases": self.phases,
            "rebuild": self.rebuild,
            "profiles": self.profiles,
        }
        data["notes"] = closing_notes(figures, self)
        return data


def _probe_range(phases: dict[str, dict[str, Any]]) -> tuple[float, float] | None:
    values = [r["probe_ms"] for r in phases.values() if r.get("probe_ms")]
    return (min(values), max(values)) if values else None


def scenario(args: argparse.Namespace) -> dict[str, Any]:
    """What must match for two runs' ratios to be comparable."""
    return {
        "rate": args.rate,
        "rate_seconds": args.rate_seconds,
        "rounds": args.rounds,
        "saturation_seconds": args.saturation_seconds,
        "concurrency": args.concurrency,
        "lag_rate": args.lag_rate,
        "rebuild_events": args.rebuild_events,
        "rebuild_max_seconds": args.rebuild_max_seconds,
        # only when chosen: runs of the default compare with the runs before the flag
        **({"rebuild_workers": args.rebuild_workers} if args.rebuild_workers else {}),
        "skip": sorted(args.skip),
        "order": "saturation, lag, then fixed rate",
        # writes/s at saturation against the bare POST, the lag in rounds (before: the
        # commit rate, one lag window): ratios of earlier runs do not compare
        "design": 2,
    }


def summarize_phase(result: dict[str, Any]) -> dict[str, Any]:
    """Percentiles of a phase; requests never answered count as slower than any answer."""
    latencies = result.pop("latencies_ms")
    lags = result.pop("lags_ms")
    statuses = result["statuses"]
    unanswered = sum(
        statuses.get(k, 0) for k in ("unfinished", "TimeoutError", "ServerTimeoutError")
    )
    padded = latencies + [math.inf] * unanswered
    result.update(
        # open loop: what was due in the window, over the time it took to answer it
        throughput=result["ok"] / max(result["seconds"], result.pop("last_done")),
        unanswered=unanswered,
        p50_ms=finite(percentile(padded, 50)),
        p95_ms=finite(percentile(padded, 95)),
        p99_ms=finite(percentile(padded, 99)),
        max_ms=max(latencies) if latencies else None,
    )
    if lags:
        # the samples too: the lag phase pools its rounds' (see :func:`lag_percentiles`)
        result.update(lag_percentiles(lags), lag_values_ms=lags)
    result["client_cpu_share"] = result["client_cpu_seconds"] / result["seconds"]
    # CPU the servers spent per request: steadier than rates on a shared machine
    cpu = result.get("cpu") or {}
    servers = {n: v for n, v in cpu.get("process_cores_busy", {}).items() if n != "load-generator"}
    if servers and result["ok"]:
        per_request = {n: 1000 * v * cpu["seconds"] / result["ok"] for n, v in servers.items()}
        result["cpu_ms_per_request"] = sum(per_request.values())
        by_process = {n: round(v, 3) for n, v in per_request.items() if v}
        result["cpu_ms_by_process"] = by_process
        top = sorted(by_process.items(), key=lambda kv: -kv[1])[:3]
        result["cpu_breakdown"] = ", ".join(f"{n} {v:.1f}" for n, v in top)
    return result


def finite(value: float | None) -> float | None:
    """A percentile, or None where it fell on what never answered (infinite)."""
    return None if value is None or math.isinf(value) else value


def lag_percentiles(lags: list[float | None]) -> dict[str, Any]:
    """The lag's figures from its samples; a write the chart never showed (None) counts
    as slower than any it did."""
    seen = [lag for lag in lags if lag is not None]
    padded = seen + [math.inf] * (len(lags) - len(seen))
    return {
        "lag_samples": len(lags),
        "lag_unseen": len(lags) - len(seen),
        "lag_p50_ms": finite(percentile(padded, 50)) if lags else None,
        "lag_p99_ms": finite(percentile(padded, 99)) if lags else None,
    }


def bare_name(kind: str, mode: str, rate: float | None, default_rate: float) -> str:
    """The phase name of bare windows: ``<kind>.<mode>``, with ``@<rate>`` at a rate
    other than ``--rate`` (the lag phase's)."""
    if mode == "rate" and rate is not None and rate != default_rate:
        return f"{kind}.{mode}@{rate:g}"
    return f"{kind}.{mode}"


def median_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    """A phase's rounds as one: each latency percentile the median of its rounds'.

    The rest (throughput, CPU, speed probe) is that of the round whose p99 is the
    median, taken whole, with every round's latencies beside it. A round whose
    percentile fell on requests never answered ranks slowest for it. Rounds are
    minutes apart: a spell in which the virtual machine's host slows every process
    down (see the speed probe) lands in one round, not in the figure. Each
    percentile is a median of its own: the round with the median p99 brought its
    p50 and p95 along, and a bare endpoint's p50 of about a millisecond then moved
    by half from run to run (0.6 against 1.2 ms), with every ratio held against it.
    """
    ordered = sorted(results, key=lambda r: _slowest_last(r["p99_ms"]))
    chosen = dict(ordered[len(ordered) // 2])
    for q in ("p50_ms", "p95_ms"):
        values = sorted((r[q] for r in results), key=_slowest_last)
        chosen[q] = values[len(values) // 2]
    chosen["rounds"] = [round_summary(r) for r in results]
    return chosen


def round_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What a phase keeps of each of its rounds (``rounds`` in the JSON)."""
    keys = (
        "throughput", "p50_ms", "p95_ms", "p99_ms", "cpu_ms_per_request", "cpu_ms_by_process",
        "probe_ms",
    )  # fmt: skip
    return {k: result.get(k) for k in keys}


def _slowest_last(latency: float | None) -> tuple[bool, float]:
    """Sort key of a latency; None (requests never answered) after any answer."""
    return latency is None, latency or 0.0


def paired_ratio(result: dict[str, Any], key: str) -> float | None:
    """The median over a phase's rounds of ``key`` over the same of the bare window run
    right before it. The ratio of two medians would hold the figure of one round
    against the baseline of another, minutes apart: the host's speed moved the
    cores by up to 60% in less (see the speed probe), and a ratio by as much."""
    rounds, paired = result.get("rounds") or [], (result.get("paired") or {}).get("rounds") or []
    if not paired:
        return None
    ratios = []
    for figure, baseline in zip(rounds, paired, strict=True):
        if not baseline.get(key):
            continue
        # a percentile that fell on requests never answered is slower than any answer
        value = figure.get(key)
        ratios.append(math.inf if value is None else value / baseline[key])
    if not ratios:
        return None
    ratios.sort()
    middle = ratios[len(ratios) // 2]
    return None if math.isinf(middle) else middle


def bare_kind(target_kind: str) -> str:
    """The bare endpoint's request that stands for a platform request: a POST of a
    Patient-sized body for a create, a GET for a read or search."""
    return "bare_post" if target_kind.startswith("create") else "bare_get"


def _busiest(result: dict[str, Any]) -> tuple[str, float]:
    processes = (result.get("cpu") or {}).get("process_cores_busy", {})
    candidates = {n: v for n, v in processes.items() if n != "load-generator"}
    if not candidates:
        return "-", 0.0
    name = max(candidates, key=lambda n: candidates[n])
    return name, candidates[name]


def build_figures(run: Run) -> list[Figure]:
    p, b, args = run.phases, run.baselines, run.args
    figures: list[Figure] = []
    rate = f"@{args.rate:g}/s"

    def get(phase: str, key: str) -> Any:
        return p.get(phase, {}).get(key)

    def base(phase: str, bare: str, key: str) -> dict[str, Any]:
        """A figure's baseline: the bare windows paired with its phase's rounds (their
        median, and the median of the rounds' ratios), else the phase ``bare``."""
        pair = get(phase, "paired")
        if pair:
            return {"baseline": pair.get(key), "paired_ratio": paired_ratio(p[phase], key)}
        return {"baseline": get(bare, key)}

    def latency_rows(
        group: str, label: str, phase: str, bare: str, target: float | None, key: str = ""
    ) -> None:
        for q in ("p50", "p95", "p99"):
            figures.append(
                Figure(
                    key=f"{key or phase}.{q}",
                    group=group,
                    label=f"{label} {q}",
                    value=get(phase, f"{q}_ms"),
                    unit="ms",
                    baseline_label=f"bare {q}",
                    **base(phase, bare, f"{q}_ms"),
                    target_op="<=" if q == "p99" and target is not None else "",
                    target=target if q == "p99" else None,
                    phase=phase,
                    overloaded=overloaded(phase),
                    baseline_phase=bare,
                    **(unanswered(phase, q) or rounds_note(phase, q)),
                )
            )

    def overloaded(phase: str) -> bool:
        result = p.get(phase)
        if not result or not result.get("offered_rate"):
            return False
        return bool(result["unanswered"]) or result["throughput"] < 0.95 * result["offered_rate"]

    def rounds_note(phase: str, q: str) -> dict[str, str]:
        listed = p.get(phase, {}).get("rounds") or []
        if len(listed) < 2:
            return {}
        values = "/".join(report.fmt(r.get(f"{q}_ms"), "ms").removesuffix(" ms") for r in listed)
        return {"note": f"median of {len(listed)} rounds: {values} ms"}

    def unanswered(phase: str, q: str) -> dict[str, str]:
        if get(phase, f"{q}_ms") is not None or not get(phase, "unanswered"):
            return {}
        return {
            "value_text": f"> {args.drain_seconds:g} s",
            "note": f"{get(phase, 'unanswered')} requests not answered {args.drain_seconds:g} s "
            "after the window",
        }

    def cpu_row(group: str, label: str, phase: str, bare: str) -> None:
        figures.append(
            Figure(
                key=f"{phase}.cpu",
                group=group,
                label=f"{label}: platform CPU per request",
                value=get(phase, "cpu_ms_per_request"),
                unit="ms",
                baseline_label="bare CPU/req",
                **base(phase, bare, "cpu_ms_per_request"),
                phase=phase,
                note=get(phase, "cpu_breakdown") or "",
                baseline_phase=bare,
            )
        )

    def fixed_rate_rows(group: str, name: str, label: str, bare: str, target: float) -> None:
        """Served rate and latencies of ``name`` at the fixed offered rate."""
        fixed = f"{name}.rate"
        figures.append(
            Figure(
                f"{fixed}.rps",
                group,
                f"{label} {rate}: req/s",
                get(fixed, "throughput"),
                "/s",
                "bare /s",
                phase=fixed,
                note=_kept_up(p.get(fixed), args.rate),
                **base(fixed, bare, "throughput"),
            )  # fmt: skip
        )
        latency_rows(group, f"{label} {rate}", fixed, bare, target)

    commit = b.get("commit", {})

    def saturation_rows(group: str, sat: str, label: str, bare: str, note: str = "") -> None:
        """Rate, latencies and CPU per request of a phase at saturation, each held
        against the bare endpoint at saturation (``bare``), paired round by round."""
        figures.append(
            Figure(
                f"{sat}.rps",
                group,
                f"{label} saturation: req/s",
                get(sat, "throughput"),
                "/s",
                "bare /s",
                phase=sat,
                baseline_phase=bare,
                note=note,
                **base(sat, bare, "throughput"),
            )  # fmt: skip
        )
        latency_rows(group, f"{label} saturation", sat, bare, None)
        cpu_row(group, f"{label} saturation", sat, bare)

    def commit_share(sat: str) -> str:
        """What share of the event store's single-row commit rate a write phase reached.

        The writes' rate is held against the bare endpoint's POST, not this: the
        platform serves a tenth of the commit rate and is CPU-bound there, and the
        commit rate (an fsync each) moved by 40% between two runs while the writes
        moved by 7%, so as the ratio's baseline it only added its own noise."""
        value, commits = get(sat, "throughput"), commit.get("per_second")
        if not value or not commits:
            return ""
        return f"{value / commits:.0%} of the event store's {commits:,.0f} single-row commits/s"

    for name, label in (
        ("patient.create", "create Patient"),
        ("allergy.create", "create AllergyIntolerance"),
    ):
        group = "writes (return=minimal)"
        fixed_rate_rows(group, name, label, "bare_post.rate", WRITE_P99_MS)
        sat = f"{name}.saturate"
        saturation_rows(group, sat, label, "bare_post.saturate", commit_share(sat))
    full = "patient.create-full.saturate"
    saturation_rows(
        "writes (default return: waits for the chart)",
        full,
        "create Patient",
        "bare_post.saturate",
        commit_share(full),
    )

    trip = b.get("broker_round_trip", {})
    for q, target in (("p50", None), ("p99", LAG_P99_MS)):
        figures.append(
            Figure(
                f"lag.{q}",
                "event-to-chart lag",
                f"lag {q} (creates @{args.lag_rate:g}/s)",
                get("lag", f"lag_{q}_ms"),
                "ms",
                f"broker round trip {q}",
                trip.get(f"round_trip_{q}_ms"),
                "<=" if target else "",
                target,
                "lag",
                note=f"{get('lag', 'lag_samples') or 0} samples, {get('lag', 'lag_unseen') or 0} unseen",
            )  # fmt: skip
        )
    # the lag phase's own writes: the write path below saturation
    latency_rows(
        "event-to-chart lag",
        f"its creates @{args.lag_rate:g}/s (minimal)",
        "lag",
        bare_name("bare_post", "rate", args.lag_rate, args.rate),
        None,
        key="lag.create",
    )

    for name, label in (
        ("patient.read", "read Patient by id"),
        ("patient.search", "search Patient by family"),
    ):
        fixed_rate_rows("reads", name, label, "bare_get.rate", READ_P99_MS)
        saturation_rows("reads", f"{name}.saturate", label, "bare_get.saturate")

    r = run.rebuild
    produce = b.get("broker_produce", {})
    # the topic also holds the events of the run's own writes (the note counts them
    # all); the label stays the same from run to run: runs are compared by it
    n = f"{args.rebuild_events:,} seeded events and the run's writes"
    complete = "" if r.get("complete") else "INCOMPLETE: "
    figures.append(
        Figure(
            "rebuild.applying",
            "rebuild",
            f"rebuild chart from {n}: applying ev/s",
            r.get("applying_per_second"),
            "/s",
            "produced/s (acks=all)",
            produce.get("per_second"),
            ">=",
            REBUILD_EPS,
            "rebuild",
            note=f"{complete}{r.get('events', 0):,} events, indexes built in "
            f"{r.get('index_seconds', 0):.1f}s included; excludes start, group join, idle exit",
        )  # fmt: skip
    )
    figures.append(
        Figure(
            "rebuild.wall",
            "rebuild",
            f"rebuild chart from {n}: wall ev/s",
            r.get("wall_per_second"),
            "/s",
            "produced/s (acks=all)",
            produce.get("per_second"),
            phase="rebuild",
            note=f"{r.get('wall_seconds', 0):.1f}s start to exit; join+first batch "
            f"{r.get('until_first_batch_seconds') or 0:.1f}s",
        )  # fmt: skip
    )
    keys = [f.key for f in figures]
    assert len(keys) == len(set(keys)), "every figure needs its own key"
    for f in figures:
        # CPU-bound figures: at saturation the cores set the pace, so a change of the
        # cores' speed between the figure's phase and its baseline's moves the ratio
        # (a ratio of paired rounds needs no such correction: both met the same cores)
        here, there = get(f.phase, "probe_ms"), get(f.baseline_phase, "probe_ms")
        if ".saturate" in f.phase and here and there and f.paired_ratio is None:
            f.speed = here / there
    return figures


def _kept_up(result: dict[str, Any] | None, rate: float) -> str:
    if not result:
        return ""
    if result["failed"]:
        return f"{result['failed']} failed"
    if result["throughput"] < 0.95 * rate:
        return "did not keep up"
    return ""


def closing_notes(figures: list[Figure], run: Run) -> list[str]:
    """For each missed target: the busiest process of its phase, the machine, the profile."""
    notes: list[str] = []
    for f in figures:
        if f.result != "MISS":
            continue
        if f.phase == "rebuild":
            r = run.rebuild
            cpu_share = r.get("cpu_seconds", 0) / max(1e-9, r.get("wall_seconds", 1))
            text = (
                f"{f.label} = {report.fmt(f.value, f.unit)} misses {f.target_op} "
                f"{report.fmt(f.target, f.unit)}: the rebuild command and its processes used "
                f"{cpu_share:.2f} cores over its run, of {CORES}"
            )
            machine, own = r.get("applying_machine_cores"), r.get("applying_rebuild_cores")
            if machine is not None and own is not None:
                text += (
                    f"; while applying, the machine was {machine:.2f} cores busy and the "
                    f"rebuild's processes {own:.2f}, "
                    f"{r.get('applying_rebuild_cpu_us_per_event') or 0:.0f} µs of CPU per event"
                )
            notes.append(text + _profile_text(run, "rebuild.rebuild"))
            continue
        phase = run.phases.get(f.phase, {})
        cpu = phase.get("cpu") or {}
        processes = {
            k: v for k, v in cpu.get("process_cores_busy", {}).items() if k != "load-generator"
        }
        top = sorted(processes.items(), key=lambda kv: -kv[1])[:3]
        busy = cpu.get("machine_cores_busy", 0.0)
        text = (
            f"{f.label} = {f.value_text or report.fmt(f.value, f.unit)} misses {f.target_op} "
            f"{report.fmt(f.target, f.unit)}"
            f" ({phase.get('throughput', 0):.0f}/s served of {phase.get('offered_rate') or 'max'}"
            f"{'/s offered' if phase.get('offered_rate') else ''}): machine {busy:.2f} of {CORES} cores busy"
            f" (load generator {cpu.get('process_cores_busy', {}).get('load-generator', 0):.2f},"
            f" others {cpu.get('foreign_cores_busy', 0):.2f}); busiest: "
            + ", ".join(f"{n} {v:.2f}" for n, v in top)
        )
        if top and top[0][1] >= 0.8:
            text += f" -> {top[0][0]} saturated (one Python event loop near a full core)"
        elif busy >= 0.9 * CORES:
            text += " -> the machine is CPU-bound"
        if f.phase == "lag":
            trip = run.baselines.get("broker_round_trip", {})
            text += (
                f". The broker alone (acks=all produce to a consumer with the projection runner's "
                f"settings) delivers at p50 {report.fmt(trip.get('round_trip_p50_ms'), 'ms')}, p99 "
                f"{report.fmt(trip.get('round_trip_p99_ms'), 'ms')} although its produce ack takes "
                f"{report.fmt(trip.get('ack_p50_ms'), 'ms')}: the consumer's fetch wait; the rest is "
                "the relay's poll interval, the projector's apply and queueing on busy cores"
            )
            notes.append(text + _profile_text(run, "lag.chart-projector"))
            continue
        related = f.phase.replace(".rate", ".saturate")
        sat = run.phases.get(related, {})
        if sat.get("cpu_ms_per_request"):
            cost = sat["cpu_ms_per_request"]
            text += (
                f". At saturation one request costs {cost:.1f} ms of CPU ({sat['cpu_breakdown']}): "
                f"{CORES} cores carry at most {CORES * 1000 / cost:.0f} requests/s, and "
                f"{args_rate(run):g}/s needs at most {CORES * 1000 / args_rate(run):.1f} ms"
            )
        notes.append(text + _profile_text(run, f"{related}.{top[0][0]}" if top else ""))
    return notes


def args_rate(run: Run) -> float:
    return float(run.args.rate)


def _profile_text(run: Run, key: str) -> str:
    profile = run.profiles.get(key)
    if not profile:
        return "" if run.args.profile else " (function level: make bench ARGS=--profile)"
    platform = "; ".join(f"{n} {v:.0f}%" for n, v in profile["platform"][:4])
    libraries = "; ".join(f"{n} {v:.0f}%" for n, v in profile["by_library"][:4])
    own = "; ".join(f"{n} {v:.0f}%" for n, v in profile["own"][:3])
    return (
        f"\n    profile of {key} ({profile['samples']} samples): spent in {platform}"
        f"\n    by library: {libraries}\n    hottest frames: {own}"
    )


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def print_report(
    data: dict[str, Any], figures: list[Figure], comparison: dict[str, Any] | None
) -> None:
    meta = data["meta"]
    print()
    print(
        f"EHR platform benchmark {meta['timestamp']}: {meta['backend']}, {meta['cores']} cores, "
        f"commit {meta['commit']}, {meta['duration_seconds']:.0f}s"
    )
    print("ratio = value / baseline (rates: share of the baseline; latencies: multiples of it)")
    print()
    print(report.figures_table(figures))
    print()
    print(phases_table(data["phases"]))
    print()
    b = data["baselines"]
    print("baselines:")
    for key in ("commit_read_models", "commit"):
        if key in b:
            print(f"  {b[key]['what']}: {b[key]['per_second']:,.0f} single-row commits/s")
    if "broker_produce" in b:
        bp = b["broker_produce"]
        print(
            f"  broker produce, acks=all: {bp['per_second']:,.0f} messages/s "
            f"({bp['mean_value_bytes']:.0f} B value, {bp['mean_header_bytes']:.0f} B headers)"
        )
    if "broker_round_trip" in b:
        rt = b["broker_round_trip"]
        print(
            f"  broker round trip: ack p50 {rt['ack_p50_ms']:.1f} ms; delivered p50 "
            f"{report.fmt(rt['round_trip_p50_ms'], 'ms')}, p99 {report.fmt(rt['round_trip_p99_ms'], 'ms')}"
        )
    print(f"  platform idle: {b.get('platform_idle_cores', 0):.2f} cores (pollers)")
    others = meta.get("others_mean_cores", 0.0)
    print(
        f"  rest of the machine during the platform's phases: {others:.2f} cores on average, "
        f"{meta.get('others_max_cores', 0.0):.2f} at most"
    )
    if others > 0.2:
        print(
            "  WARNING: other processes used the machine meanwhile: the figures are lower and the "
            "ratios less stable than on a quiet machine"
        )
    probe, spread = meta.get("probe_median_ms"), meta.get("probe_phase_range_ms")
    if probe and spread:
        print(
            f"  speed probe (CPU ms of a fixed workload; higher = slower cores): median {probe:.2f}, "
            f"phases from {spread[0]:.2f} to {spread[1]:.2f} ({100 * (spread[1] / spread[0] - 1):.0f}% apart)"
        )
    if comparison and comparison["rows"]:
        print()
        print(
            f"ratios beside the previous run ({comparison['previous_run']}): "
            f"{comparison['stable']} of {comparison['compared']} within 20%; "
            f"{comparison['stable_not_overloaded']} of {comparison['compared_not_overloaded']} "
            "leaving out latencies at a rate the platform could not serve; "
            f"{comparison.get('adjusted_stable_not_overloaded', '-')} of those with the CPU-bound "
            "ratios adjusted for the cores' speed (speed probe of the figure's phase over its "
            "baseline's)"
        )
        before, now = comparison.get("previous_probe_ms"), data["meta"].get("probe_median_ms")
        if before and now:
            print(
                f"the machine itself: speed probe {before:.2f} ms then, {now:.2f} ms now "
                f"({100 * (now / before - 1):+.0f}%): CPU-bound figures move with it"
            )
        print(report.comparison_table(comparison))
    misses = [f for f in figures if f.result == "MISS"]
    passes = [f for f in figures if f.result == "pass"]
    print()
    print(f"targets: {len(passes)} met, {len(misses)} missed")
    if data["notes"]:
        print("closing note (bottleneck of each missed target):")
        for note in data["notes"]:
            print(f"  - {note}")


def phases_table(phases: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, r in phases.items():
        cpu = r.get("cpu") or {}
        busiest, share = _busiest(r)
        rows.append(
            [
                name,
                f"{r['offered_rate']:g}/s" if r["offered_rate"] else "closed",
                f"{r['throughput']:.1f}",
                str(r["failed"]),
                f"{cpu.get('process_cores_busy', {}).get('load-generator', 0):.2f}",
                f"{cpu.get('machine_cores_busy', 0):.2f}",
                f"{cpu.get('foreign_cores_busy', 0):.2f}",
                f"{busiest} {share:.2f}",
                f"{r.get('send_delay_p99_ms', 0):.1f}" if r["offered_rate"] else "",
                report.fmt(r.get("probe_ms")),
            ]
        )
    return table_with_title(
        "phases (CPU in cores busy over the recorded window; probe: CPU ms of a fixed "
        "workload, higher = slower machine)",
        rows,
        [
            "phase",
            "offered",
            "served/s",
            "failed",
            "loadgen",
            "machine",
            "others",
            "busiest",
            "late p99 ms",
            "probe",
        ],
    )


def table_with_title(title: str, rows: list[list[str]], header: list[str]) -> str:
    return title + ":\n" + report.table(rows, header, right={2, 3, 4, 5, 6, 8, 9})


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    run = Run(args)
    say(f"benchmark: {'PostgreSQL' if args.postgres else 'SQLite'}; platform files in {run.work}")
    try:
        data = run.execute()
    finally:
        if not args.keep:
            shutil.rmtree(run.work, ignore_errors=True)
    figures = [
        Figure(**{k: v for k, v in f.items() if k not in ("ratio", "result", "adjusted_ratio")})
        for f in data["figures"]
    ]
    previous = report.previous_run(args.out, data["meta"]["backend"])
    comparison = None
    if previous and previous["meta"].get("scenario") == data["meta"]["scenario"]:
        comparison = report.compare(data, previous)
        comparison["previous_probe_ms"] = previous["meta"].get("probe_median_ms")
        data["comparison"] = comparison
    path, _ = report.write(args.out, data["meta"]["timestamp"], data)
    print_report(data, figures, comparison)
    print(f"\nwritten: {path} and {args.out / 'latest.json'}")
    return 0
