"""Outside the development profile, no process starts with demo users or default secrets."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ehr_events.devinfra import free_port

pytestmark = pytest.mark.e2e


def start(service: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
    environment.update({"EHR_PROFILE": "production", "EHR_VAR_DIR": str(tmp_path), **env})
    return subprocess.run(
        [sys.executable, "-m", service, "serve", "--port", str(free_port())],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def secret() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.mark.parametrize("service", ["identity", "records", "gateway", "projections"])
def test_a_service_refuses_the_default_cipher_key_in_production(
    service: str, tmp_path: Path
) -> None:
    result = start(service, tmp_path)
    assert result.returncode != 0
    assert "EHR_CIPHER_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_identity_refuses_demo_users_in_production(tmp_path: Path) -> None:
    key = secret()
    result = start("identity", tmp_path, EHR_CIPHER_KEY=key)
    assert result.returncode != 0
    assert "EHR_SEED_DEMO_USERS" in result.stderr
    assert key not in result.stderr  # the reason, never the secret


def test_records_refuses_the_default_patient_id_key_in_production(tmp_path: Path) -> None:
    result = start("records", tmp_path, EHR_CIPHER_KEY=secret())
    assert result.returncode != 0
    assert "EHR_PATIENT_ID_KEY" in result.stderr


def test_the_gateway_refuses_the_default_paging_key_in_production(tmp_path: Path) -> None:
    result = start("gateway", tmp_path, EHR_CIPHER_KEY=secret())
    assert result.returncode != 0
    assert "EHR_PAGING_KEY" in result.stderr
