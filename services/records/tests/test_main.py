"""The processes as ``python -m records`` starts them: the API and the relay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ehr_events.db import make_engine
from ehr_events.devinfra import free_port, wait_for_port
from ehr_events.outbox import PositionStore
from ehr_events.testing import settings_for_test
from records.application import RecordsApplication
from records.config import RecordsSettings

from .builders import FAMILY, actor, demographics, unique_mrn


def environment(settings: RecordsSettings) -> dict[str, str]:
    return {
        **os.environ,
        "EHR_PROFILE": settings.profile.value,
        "EHR_VAR_DIR": str(settings.var_dir),
        "EHR_CIPHER_KEY": settings.cipher_key,
        "EHR_PATIENT_ID_KEY": settings.patient_id_key,
        "EHR_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
    }


@contextmanager
def running(args: list[str], settings: RecordsSettings) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "records", *args],
        env=environment(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_serve_answers_and_logs_no_query_string(tmp_path: Path) -> None:
    settings = settings_for_test(RecordsSettings, tmp_path / "var")
    port = free_port()

    with running(["serve", "--port", str(port)], settings) as process:
        wait_for_port(port, timeout=20)
        response = httpx.get(f"http://127.0.0.1:{port}/health/ready?family={FAMILY}")
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert process.wait(timeout=10) in (0, -signal.SIGTERM)

    assert response.status_code == 200
    log = (tmp_path / "var" / "log" / "records.log").read_text()
    assert "Application shutdown complete" in log
    assert "GET /health/ready 200" in log
    assert FAMILY not in log


@pytest.mark.kafka
def test_relay_publishes_and_stops_on_sigterm(tmp_path: Path, broker: str) -> None:
    settings = settings_for_test(RecordsSettings, tmp_path / "var", kafka_bootstrap=broker)
    app = RecordsApplication.from_settings(settings)
    try:
        saved = app.register_patient(unique_mrn(), demographics(), actor())
    finally:
        app.close()
    positions = PositionStore(make_engine(settings, "records"), "records")

    with running(["relay"], settings) as process:
        deadline = time.monotonic() + 30
        while positions.get() < saved.position and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0

    assert positions.get() == saved.position
    positions.engine.dispose()
