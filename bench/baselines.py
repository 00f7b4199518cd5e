"""Physical baselines of the database: how fast it commits one row at a time.

A write through the platform commits at least once in the records event store;
no write path can beat the rate at which the same database commits single-row
transactions on the same disk. Measured in the run itself, on the platform's
own ``var`` folder (SQLite) or on the benchmark's PostgreSQL database, with the
platform's settings:

* SQLite, the read models' settings (:func:`ehr_events.db.make_engine`): WAL,
  ``synchronous=NORMAL``, ``busy_timeout``;
* SQLite, the event store's settings (``eventsourcing.sqlite``): WAL and the
  default ``synchronous=FULL``, autocommit connection with explicit transactions;
* PostgreSQL: psycopg 3 (the driver of the platform), one ``INSERT`` and ``COMMIT``
  per transaction.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

ROW = "x" * 400  # about the size of a stored event's payload


def sqlite_commit_rate(folder: Path, *, synchronous: str, seconds: float = 2.0) -> dict[str, Any]:
    """Single-row commits per second into a fresh SQLite file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"bench-commits-{synchronous.lower()}.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        return _timed(
            lambda: (
                conn.execute("BEGIN"),
                conn.execute("INSERT INTO rows (body) VALUES (?)", (ROW,)),
                conn.execute("COMMIT"),
            ),
            seconds,
        )
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def postgres_commit_rate(database_url: str, *, seconds: float = 2.0) -> dict[str, Any]:
    """Single-row commits per second into a table of the ``bench_baseline`` schema."""
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bench_baseline CASCADE")
        conn.execute("CREATE SCHEMA bench_baseline")
        conn.execute(
            "CREATE TABLE bench_baseline.rows (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)"
        )
        conn.commit()

        def one() -> None:
            conn.execute("INSERT INTO bench_baseline.rows (body) VALUES (%s)", (ROW,))
            conn.commit()

        try:
            return _timed(one, seconds)
        finally:
            conn.execute("DROP SCHEMA IF EXISTS bench_baseline CASCADE")
            conn.commit()


def _timed(commit: Any, seconds: float, slices: int = 8) -> dict[str, Any]:
    """Commit for ``seconds``; the rate is the median of ``slices`` equal slices' rates,
    so that a spell of the host's slowness in one of them does not move it."""
    for _ in range(20):  # warm-up
        commit()
    latencies: list[float] = []
    counts = [0] * slices
    started = time.perf_counter()
    end = started + seconds
    while True:
        before = time.perf_counter()
        if before >= end:
            break
        commit()
        latencies.append((time.perf_counter() - before) * 1000)
        counts[min(slices - 1, int((before - started) / seconds * slices))] += 1
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "commits": len(latencies),
        "seconds": elapsed,
        "per_second": statistics.median(counts) * slices / seconds,
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }
