"""``python -m projections``: the processes as the Procfile starts them."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from ehr_events.devinfra import free_port, start_broker, wait_for_port
from ehr_events.outbox import ensure_topics
from projections.chart import metadata as chart_metadata
from projections.config import ProjectionsSettings
from projections.queries import get_resource
from projections.readmodels import make_read_engine

from .builders import allergy_recorded, allergy_refuted, demographics_updated, patient_registered
from .test_runner_with_broker import produce


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
    env.update({"EHR_VAR_DIR": str(tmp_path / "var"), "EHR_PROFILE": "development", **extra})
    return env


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of this test alone: ``rebuild`` reads the real topic names."""
    process, port = start_broker()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_answers_health_checks_and_refuses_anonymous_reads(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "projections", "serve", "--port", str(port)],
        env=environment(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health/live").json() == {"status": "ok"}
        assert httpx.get(f"{base}/health/ready").status_code == 200
        assert httpx.get(f"{base}/chart/Patient/x").status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert (tmp_path / "var" / "projections" / "chart.sqlite3").is_file()
    assert (tmp_path / "var" / "projections" / "audit.sqlite3").is_file()
    assert (tmp_path / "var" / "log" / "projections.log").is_file()


def test_run_projects_the_topic_until_terminated(tmp_path: Path, own_broker: str) -> None:
    asyncio.run(ensure_topics(own_broker, ["ehr.records.events"]))
    asyncio.run(produce(own_broker, "ehr.records.events", [patient_registered("p-1")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "projections", "run", "chart"],
        env=environment(tmp_path, EHR_KAFKA_BOOTSTRAP=own_broker),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        engine = make_read_engine(ProjectionsSettings(var_dir=tmp_path / "var"), "chart")

        def projected() -> bool:
            try:
                return get_resource(engine, "Patient", "p-1") is not None
            except OperationalError:  # the projector has not created its tables yet
                return False

        deadline = time.monotonic() + 30
        while not projected():
            assert time.monotonic() < deadline, "the projector did not project the event"
            assert process.poll() is None, "the projector exited"
            time.sleep(0.2)
        engine.dispose()
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=20)
    assert returncode == 0
    assert (tmp_path / "var" / "log" / "projector-chart.log").is_file()


def test_rebuild_replays_the_topic_and_prints_the_count(tmp_path: Path, own_broker: str) -> None:
    events = [
        patient_registered("p-1"),
        patient_registered("p-2", mrn="MRN-0002"),
        allergy_recorded("a-1", "p-1"),
    ]
    asyncio.run(ensure_topics(own_broker, ["ehr.records.events"]))
    asyncio.run(produce(own_broker, "ehr.records.events", events))

    done = subprocess.run(
        [sys.executable, "-m", "projections", "rebuild", "chart", "--idle-seconds", "1"],
        env=environment(tmp_path, EHR_KAFKA_BOOTSTRAP=own_broker),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "chart: rebuilt from 3 events"


def chart_digest(var_dir: Path) -> dict[str, tuple[int, str]]:
    """Rows and digest of every table of the chart but the runner's state (generation)."""
    db = sqlite3.connect(f"file:{var_dir / 'projections' / 'chart.sqlite3'}?mode=ro", uri=True)
    try:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' AND name != 'projection_state'"
            )
        ]
        digests = {}
        for table in tables:
            rows = sorted(repr(row) for row in db.execute(f'SELECT * FROM "{table}"'))
            digests[table] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
        return digests
    finally:
        db.close()


def chart_indexes(var_dir: Path) -> set[str]:
    """The named indexes of the chart's database (not SQLite's automatic ones)."""
    db = sqlite3.connect(f"file:{var_dir / 'projections' / 'chart.sqlite3'}?mode=ro", uri=True)
    try:
        return {
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' "
                "AND name NOT LIKE 'sqlite_autoindex_%'"
            )
        }
    finally:
        db.close()


#: Every index the chart's tables declare.
CHART_INDEXES = {str(i.name) for t in chart_metadata.sorted_tables for i in t.indexes}


def run_rebuild(tmp_path: Path, broker: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "projections", "rebuild", "chart", "--idle-seconds", "1", *args],
        env=environment(tmp_path, EHR_KAFKA_BOOTSTRAP=broker),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_rebuild_in_several_processes_builds_the_chart_one_process_builds(
    tmp_path: Path, own_broker: str
) -> None:
    events = []
    for i in range(120):
        patient = f"p-{i:03d}"
        events.append(patient_registered(patient, mrn=f"MRN-{i:04d}", family=f"Family{i % 7}"))
        if i % 3 == 0:
            events.append(demographics_updated(patient, version=2, mrn=f"MRN-{i:04d}"))
        if i % 2 == 0:
            events.append(allergy_recorded(f"a-{i:03d}", patient))
            if i % 5 == 0:
                events.append(allergy_refuted(f"a-{i:03d}", patient))
    events.append(events[7])  # delivered twice
    distinct = len({envelope.id for envelope, _ in events})
    asyncio.run(ensure_topics(own_broker, ["ehr.records.events"]))
    asyncio.run(produce(own_broker, "ehr.records.events", events))

    assert run_rebuild(tmp_path, own_broker, "--workers", "1") == (
        f"chart: rebuilt from {distinct} events"
    )
    one_process = chart_digest(tmp_path / "var")
    log_file = tmp_path / "var" / "log" / "rebuild-chart.log"
    assert not log_file.exists()  # one process: no rebuild workers

    # the topic has 3 partitions: the fourth process gets none, and must still finish
    assert run_rebuild(tmp_path, own_broker, "--workers", "4") == (
        f"chart: rebuilt from {distinct} events"
    )
    assert chart_digest(tmp_path / "var") == one_process
    assert one_process["chart_resources"][0] == 120 + 60
    # the replay processes left the indexes out; the rebuild built them at its end
    assert len(CHART_INDEXES) >= 8
    assert chart_indexes(tmp_path / "var") == CHART_INDEXES
    applied = [
        int(n)
        for n in re.findall(r"rebuild process \d+ applied (\d+) events", log_file.read_text())
    ]
    assert len(applied) == 4
    assert sum(1 for n in applied if n > 0) >= 2  # the partitions were shared out
    assert sum(applied) >= distinct


def test_a_rebuild_that_fails_still_leaves_the_chart_its_indexes(tmp_path: Path) -> None:
    """A broker that is not there: the processes fail after the chart was dropped."""
    done = subprocess.run(
        [sys.executable, "-m", "projections", "rebuild", "chart", "--workers", "2"],
        env=environment(tmp_path, EHR_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "rebuild of chart: process rebuild-chart-" in done.stderr
    assert chart_indexes(tmp_path / "var") == CHART_INDEXES


def test_a_rebuild_stopped_with_sigterm_stops_its_processes_and_builds_the_indexes(
    tmp_path: Path, own_broker: str
) -> None:
    asyncio.run(ensure_topics(own_broker, ["ehr.records.events"]))
    asyncio.run(produce(own_broker, "ehr.records.events", [patient_registered("p-1")]))
    rebuild = subprocess.Popen(
        [sys.executable, "-m", "projections", "rebuild", "chart", "--workers", "2",
         "--idle-seconds", "120"],
        env=environment(tmp_path, EHR_KAFKA_BOOTSTRAP=own_broker),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        # the event is in: the processes now wait for more, up to two minutes
        deadline = time.monotonic() + 60
        while applied(tmp_path / "var") < 1:
            assert rebuild.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        rebuild.send_signal(signal.SIGTERM)
        _, stderr = rebuild.communicate(timeout=30)
    finally:
        if rebuild.poll() is None:
            rebuild.kill()
    assert rebuild.returncode == 1
    assert "rebuild of chart stopped before its end" in stderr
    assert chart_indexes(tmp_path / "var") == CHART_INDEXES
    log_file = (tmp_path / "var" / "log" / "rebuild-chart.log").read_text()
    assert len(re.findall(r"rebuild process \d+ applied", log_file)) == 0  # stopped, not ended


def applied(var_dir: Path) -> int:
    """The chart's count of applied events (0 before its tables exist)."""
    path = var_dir / "projections" / "chart.sqlite3"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute(
            "SELECT applied FROM projection_state WHERE projection = 'chart'"
        ).fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
    return int(row[0]) if row else 0


def test_rebuild_refuses_fewer_than_one_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "projections", "rebuild", "chart", "--workers", "0"],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers must be at least 1" in done.stderr


def test_the_default_is_one_rebuild_process_per_partition_at_most_two_per_core() -> None:
    from projections.__main__ import default_workers

    cores = os.cpu_count() or 1
    assert default_workers(0) == 1
    assert default_workers(1) == 1
    assert default_workers(3) == min(3, 2 * cores)
    assert default_workers(10_000) == 2 * cores
