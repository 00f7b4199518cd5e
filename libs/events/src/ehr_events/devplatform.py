"""The real platform in processes, for end-to-end tests, benchmarks and fault drills.

Starts the broker and every service exactly as the Procfile does, on free
loopback ports, with a temporary ``var`` folder, and talks to them over HTTP only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ehr_events.devinfra import broker_command, free_port, wait_for_port

#: Our processes off the request path: the outbox relays and the projectors. On
#: one machine they run at a lower CPU priority (``nice``) than the HTTP services,
#: as the Procfile starts them: when the cores are busy a request is served first
#: and the event pipeline catches up after it, in larger batches (its lag has a
#: budget of hundreds of milliseconds, a request's of tens). The broker keeps the
#: normal priority: it is shared infrastructure, and a consumer at normal priority
#: (a rebuild) would otherwise starve it.
BACKGROUND = frozenset(
    {
        "identity-relay",
        "records-relay",
        "chart-projector",
        "audit-projector",
        "gateway-relay",
    }
)
#: The niceness they run at (the HTTP services keep 0).
BACKGROUND_NICE = 10


@dataclass
class Platform:
    var_dir: Path
    profile: str = "development"
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("gateway", "identity", "records", "projections", "broker"):
            self.ports.setdefault(name, free_port())
        (self.var_dir / "log").mkdir(parents=True, exist_ok=True)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EHR_")}
        env.update(
            {
                "EHR_PROFILE": self.profile,
                "EHR_VAR_DIR": str(self.var_dir),
                "EHR_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.ports['broker']}",
                "EHR_IDENTITY_URL": f"http://127.0.0.1:{self.ports['identity']}",
                "EHR_RECORDS_URL": f"http://127.0.0.1:{self.ports['records']}",
                "EHR_PROJECTIONS_URL": f"http://127.0.0.1:{self.ports['projections']}",
                "EHR_JWKS_URL": f"http://127.0.0.1:{self.ports['identity']}/auth/jwks",
                "EHR_TOKEN_ISSUER": f"{self.gateway_url}/auth",
                "EHR_FHIR_BASE_URL": f"{self.gateway_url}/fhir",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def commands(self) -> dict[str, list[str]]:
        """Each process's command line (``nice`` execs its command: the pid is the same)."""
        return {
            name: ["nice", "-n", str(BACKGROUND_NICE), *command] if name in BACKGROUND else command
            for name, command in self._commands().items()
        }

    def _commands(self) -> dict[str, list[str]]:
        py = sys.executable
        return {
            "broker": broker_command(self.ports["broker"]),
            "identity": [py, "-m", "identity", "serve", "--port", str(self.ports["identity"])],
            "identity-relay": [py, "-m", "identity", "relay"],
            "records": [py, "-m", "records", "serve", "--port", str(self.ports["records"])],
            "records-relay": [py, "-m", "records", "relay"],
            "projections": [
                py,
                "-m",
                "projections",
                "serve",
                "--port",
                str(self.ports["projections"]),
            ],
            "chart-projector": [py, "-m", "projections", "run", "chart"],
            "audit-projector": [py, "-m", "projections", "run", "audit"],
            "gateway": [py, "-m", "gateway", "serve", "--port", str(self.ports["gateway"])],
            "gateway-relay": [py, "-m", "gateway", "relay"],
        }

    def start(self, *names: str) -> None:
        """Start the processes (all, or ``names``) and wait until they answer.

        If one fails to start (or to answer in time), every process this call
        started is stopped before the error is raised: none is left running.
        """
        commands = self.commands()
        started: list[str] = []
        try:
            for name in names or tuple(commands):
                out = open(self.var_dir / "log" / f"{name}.out", "ab")  # noqa: SIM115
                self.processes[name] = subprocess.Popen(
                    commands[name], env=self.env(), stdout=out, stderr=subprocess.STDOUT
                )
                started.append(name)
            if not names or "broker" in names:
                wait_for_port(self.ports["broker"])
            self.wait_ready()
        except BaseException:
            self.stop(*started)
            raise

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for name in ("identity", "records", "projections", "gateway"):
            if name not in self.processes:
                continue
            url = f"http://127.0.0.1:{self.ports[name]}/health/ready"
            while True:
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}")
                try:
                    if httpx.get(url, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready")
                time.sleep(0.1)

    def stop(self, *names: str, sig: int = signal.SIGTERM) -> None:
        for name in names or tuple(self.processes):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(sig)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self, *names: str) -> None:
        """kill -9: no clean-up, no flush."""
        self.stop(*names, sig=signal.SIGKILL)

    def log_files(self) -> list[Path]:
        return sorted(p for p in (self.var_dir / "log").iterdir() if p.is_file())
