"""``python -m projections``: the processes as the Procfile starts them."""

from __future__ import annotations

import asyncio
import os
import signal
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
from projections.config import ProjectionsSettings
from projections.queries import get_resource
from projections.readmodels import make_read_engine

from .builders import allergy_recorded, patient_registered
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
