"""The command line: users from standard input, organisations, key rotation."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ehr_events.testing import random_cipher_key
from identity.__main__ import main
from identity.application import IdentityApplication
from identity.config import IdentitySettings
from identity.testing import FAST_ARGON2, STRONG_PASSWORD


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "EHR_PROFILE": "test",
        "EHR_VAR_DIR": str(tmp_path),
        "EHR_CIPHER_KEY": random_cipher_key(),
        "EHR_SEED_DEMO_USERS": "false",
        "EHR_DATABASE_URL": "",
        **{f"EHR_{name.upper()}": str(value) for name, value in FAST_ARGON2.items()},
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def open_store() -> IdentityApplication:
    return IdentityApplication(IdentitySettings())


def test_create_user_reads_the_password_from_stdin(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["create-organization", "--name", "North Clinic"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(STRONG_PASSWORD + "\n"))
    args = ["create-user", "--username", "Alice", "--role", "nurse", "--role", "auditor"]
    assert main([*args, "--organization", "north clinic"]) == 0
    printed = capsys.readouterr().out
    assert STRONG_PASSWORD not in printed

    app = open_store()
    try:
        user = app.find_user("alice")
        assert user is not None and str(user.id) in printed
        assert user.roles == ("auditor", "nurse")
        clinic = app.find_organization("North Clinic")
        assert clinic is not None and user.organization_id == clinic.id
        app.ensure_signing_key()
        assert app.login("alice", STRONG_PASSWORD, None).access_token
    finally:
        app.close()


def test_create_user_refuses_an_unknown_organization_and_a_duplicate(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(STRONG_PASSWORD + "\n"))
    assert (
        main(["create-user", "--username", "bob", "--role", "nurse", "--organization", "Nowhere"])
        == 1
    )
    assert "organization does not exist" in capsys.readouterr().err
    for expected in (0, 1):
        monkeypatch.setattr(sys, "stdin", io.StringIO(STRONG_PASSWORD + "\n"))
        assert main(["create-user", "--username", "bob", "--role", "nurse"]) == expected
    assert "already registered" in capsys.readouterr().err


def test_rotate_key_retires_the_current_key(
    environment: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    app = open_store()
    first = app.ensure_signing_key()
    app.close()

    assert main(["rotate-key"]) == 0

    app = open_store()
    try:
        ring = app.key_ring()
        assert ring is not None and ring.current_kid != first
        assert [k["kid"] for k in app.jwks()["keys"]] == [ring.current_kid, first]
    finally:
        app.close()
    assert ring.current_kid in capsys.readouterr().out


def test_the_module_runs_as_a_program(environment: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "identity", "create-user", "--username", "carol", "--role", "admin"],
        input=STRONG_PASSWORD + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert STRONG_PASSWORD not in result.stdout + result.stderr
    bad_role = subprocess.run(
        [sys.executable, "-m", "identity", "create-user", "--username", "dan", "--role", "root"],
        input="x\n",
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        timeout=60,
        check=False,
    )
    assert bad_role.returncode == 2


def test_production_with_demo_users_refuses_to_start_without_leaking_settings(
    environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EHR_PROFILE", "production")
    monkeypatch.setenv("EHR_SEED_DEMO_USERS", "true")
    assert main(["rotate-key"]) == 2
    err = capsys.readouterr().err
    assert "EHR_SEED_DEMO_USERS must be false" in err
    assert environment["EHR_CIPHER_KEY"] not in err
