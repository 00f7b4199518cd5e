"""The rebuild figure: ``python -m projections rebuild chart`` on a fresh read model.

The command an operator runs (``make rebuild MODEL=chart``) runs as its own
process against the platform's broker, into a read model of its own (a fresh
``var`` folder on SQLite, the ``bench_rebuild`` schema on PostgreSQL), so the
platform's chart is left alone. While it runs, this module reads the read
model's ``projection_state.applied`` counter every 100 ms:

* **applying rate**: events applied between the first and the last change of the
  counter, over that time plus the time the command then took to build the read
  model's indexes (which the replay leaves to its end; the command prints it):
  the steady rate, without the process start, the consumer-group join (seconds
  on the development broker) and the idle wait before the command exits;
* **wall rate**: all events over the whole command, start to exit, less the idle
  wait it is told to make (``--idle-seconds``).
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .cpu import machine_busy, tree_cpu

IDLE_SECONDS = 1.0
REBUILD_SCHEMA = "bench_rebuild"


def _applied_sqlite(path: Path) -> int | None:
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute(
                "SELECT applied FROM projection_state WHERE projection = 'chart'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


class _PostgresCounter:
    def __init__(self, database_url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(database_url, connect_timeout=5, autocommit=True)

    def __call__(self) -> int | None:
        import psycopg

        try:
            row = self.conn.execute(
                f'SELECT applied FROM "{REBUILD_SCHEMA}".projection_state '
                "WHERE projection = 'chart'"
            ).fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row else None

    def close(self) -> None:
        self.conn.close()


def _index_seconds(output: Path) -> float:
    """How long the command took to build the indexes, as it printed it (0 if it did not)."""
    found = re.findall(r"indexes built in ([0-9.]+)s", output.read_text(errors="replace"))
    return float(found[-1]) if found else 0.0


def _cores(
    first: tuple[float, int] | None, last: tuple[float, int], before: float, after: float
) -> float | None:
    if first is None or last[0] - first[0] < 0.5:
        return None
    return (after - before) / (last[0] - first[0])


def drop_rebuild_schema(database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{REBUILD_SCHEMA}" CASCADE')


def run_rebuild(
    env: dict[str, str],
    var_dir: Path,
    *,
    database_url: str = "",
    max_seconds: float = 600.0,
    on_first_batch: Any = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run the rebuild command to its end and time it (see the module docstring)."""
    env = {**env, "EHR_VAR_DIR": str(var_dir)}
    (var_dir / "log").mkdir(parents=True, exist_ok=True)
    if database_url:
        drop_rebuild_schema(database_url)
        env["EHR_DB_SCHEMA"] = REBUILD_SCHEMA
        counter: Any = _PostgresCounter(database_url)
    else:
        path = var_dir / "projections" / "chart.sqlite3"
        counter = lambda: _applied_sqlite(path)  # noqa: E731
    command = [
        sys.executable, "-m", "projections", "rebuild", "chart",
        "--idle-seconds", str(IDLE_SECONDS),
    ]  # fmt: skip
    if workers is not None:
        command += ["--workers", str(workers)]
    with open(var_dir / "log" / "rebuild.out", "ab") as out:
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        first: tuple[float, int] | None = None
        last: tuple[float, int] = (started, 0)
        # CPU seconds (the machine's, the command's process tree) at first and last
        first_cpu = last_cpu = (0.0, 0.0)
        cpu = 0.0
        timed_out = False
        try:
            while process.poll() is None:
                if time.monotonic() - started > max_seconds:
                    timed_out = True
                    process.terminate()
                    process.wait(timeout=30)
                    break
                cpu = tree_cpu(process.pid) or cpu
                applied = counter()
                now = time.monotonic()
                if applied:
                    if first is None:
                        first = (now, applied)
                        first_cpu = (machine_busy(), cpu)
                        if on_first_batch is not None:
                            on_first_batch(process.pid)
                    if applied != last[1]:
                        last = (now, applied)
                        last_cpu = (machine_busy(), cpu)
                time.sleep(0.1)
            finished = time.monotonic()
            final = counter() or last[1]
        finally:
            if process.poll() is None:
                process.kill()
            if database_url:
                counter.close()
    if final != last[1]:
        last = (finished, final)
    index_seconds = _index_seconds(var_dir / "log" / "rebuild.out")
    applying_seconds = (last[0] - first[0] + index_seconds) if first else 0.0
    applying_events = (last[1] - first[1]) if first else 0
    wall = finished - started - (0 if timed_out else IDLE_SECONDS)
    return {
        "events": final,
        "complete": not timed_out and process.returncode == 0,
        "returncode": process.returncode,
        "wall_seconds": finished - started,
        "wall_per_second": final / wall if wall > 0 else 0.0,
        "until_first_batch_seconds": (first[0] - started) if first else None,
        "applying_seconds": applying_seconds,
        "index_seconds": index_seconds,
        "applying_per_second": applying_events / applying_seconds if applying_seconds else 0.0,
        "cpu_seconds": cpu,
        # cores busy between the first and the last applied batch (index build
        # excluded): the whole machine's, and the rebuild command's processes'
        "applying_machine_cores": _cores(first, last, first_cpu[0], last_cpu[0]),
        "applying_rebuild_cores": _cores(first, last, first_cpu[1], last_cpu[1]),
        "applying_rebuild_cpu_us_per_event": (
            (last_cpu[1] - first_cpu[1]) / applying_events * 1e6 if applying_events else None
        ),
        "window": (first[0] if first else started, last[0]),
    }
