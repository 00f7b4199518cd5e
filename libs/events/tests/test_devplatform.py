"""The development platform starts its processes as the Procfile does, priorities included."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ehr_events.devplatform import BACKGROUND, BACKGROUND_NICE, Platform

ROOT = Path(__file__).resolve().parents[3]


def procfile() -> dict[str, list[str]]:
    entries: dict[str, list[str]] = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = shlex.split(command)
    return entries


def test_procfile_and_platform_start_the_same_processes(tmp_path: Path) -> None:
    assert set(procfile()) == set(Platform(tmp_path).commands())


def test_only_processes_off_the_request_path_run_at_a_lower_priority(tmp_path: Path) -> None:
    nice = ["nice", "-n", str(BACKGROUND_NICE)]
    commands = Platform(tmp_path).commands()
    for name, command in procfile().items():
        lowered = command[:3] == nice
        assert lowered == (name in BACKGROUND), name
        assert (commands[name][:3] == nice) == lowered, name
    assert {"gateway", "records", "identity", "projections"}.isdisjoint(BACKGROUND)


def test_the_priority_prefix_lowers_the_started_process(tmp_path: Path) -> None:
    prefix = Platform(tmp_path).commands()["records-relay"][:3]
    ours = int(subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"],
                              capture_output=True, text=True, check=True).stdout)  # fmt: skip
    started = subprocess.run(
        [*prefix, sys.executable, "-c", "import os; print(os.nice(0))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(started.stdout) == min(19, ours + BACKGROUND_NICE)


class _Recording(Platform):
    """A platform that keeps a handle on every process it started."""

    def wait_ready(self, timeout: float = 60) -> None:
        self.started = dict(self.processes)
        super().wait_ready(timeout)


def test_a_platform_that_fails_to_start_leaves_no_process_running(tmp_path: Path) -> None:
    # outside development every service refuses the default secrets and exits
    platform = _Recording(tmp_path / "var", extra_env={"EHR_PROFILE": "production"})
    with pytest.raises(RuntimeError, match="identity exited with"):
        platform.start()
    assert set(platform.started) == set(platform.commands())
    running = [name for name, p in platform.started.items() if p.poll() is None]
    assert running == []
    assert platform.processes == {}
