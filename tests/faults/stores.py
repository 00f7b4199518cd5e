"""Looking into the platform's SQLite files from outside, as an operator would.

Event stores are ``var/<service>/events.sqlite3`` (eventsourcing's
``stored_events`` table, whose rowid is the notification id, plus the relay's
``outbox_relay_positions``); read models are ``var/projections/<name>.sqlite3``.
Reads open the files read-only; the only writes are the fault drills' own.
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

#: The services whose event store an outbox relay publishes.
PUBLISHERS = ("identity", "records", "gateway")
#: Bookkeeping of the projection runner, not the read model's contents: its
#: generation (a rebuild bumps it) and where each partition continues (events
#: published again sit at later offsets). Which events it applied is compared.
RUNNER_STATE = frozenset({"projection_state", "projection_offsets"})


def event_store(var_dir: Path, service: str) -> Path:
    return var_dir / service / "events.sqlite3"


def read_model(var_dir: Path, name: str) -> Path:
    return var_dir / "projections" / f"{name}.sqlite3"


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def aggregate_versions(var_dir: Path, service: str, aggregate_id: str) -> list[int]:
    """Every stored version of one aggregate, in order, duplicates kept."""
    with closing(_read_only(event_store(var_dir, service))) as db:
        rows = db.execute(
            "SELECT originator_version FROM stored_events WHERE originator_id = ? "
            "ORDER BY originator_version",
            (uuid.UUID(aggregate_id).hex,),
        ).fetchall()
    return [int(version) for (version,) in rows]


def relay_progress(var_dir: Path, service: str) -> tuple[int, int]:
    """(last notification id in the store, position the relay has published up to)."""
    with closing(_read_only(event_store(var_dir, service))) as db:
        last = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM stored_events").fetchone()[0]
        position = db.execute(
            "SELECT COALESCE(MAX(position), 0) FROM outbox_relay_positions WHERE relay = ?",
            (service,),
        ).fetchone()[0]
    return int(last), int(position)


def forget_relay_position(var_dir: Path, service: str) -> None:
    """Make the (stopped) relay of ``service`` publish its whole store again."""
    with closing(sqlite3.connect(event_store(var_dir, service), timeout=10)) as db, db:
        db.execute("DELETE FROM outbox_relay_positions WHERE relay = ?", (service,))


def consumer_group(var_dir: Path, name: str) -> str:
    """The consumer group the read model's projector reads with (its epoch and generation)."""
    with closing(_read_only(read_model(var_dir, name))) as db:
        generation, epoch = db.execute(
            "SELECT generation, epoch FROM projection_state WHERE projection = ?", (name,)
        ).fetchone()
    return f"ehr.projection.{name}.{epoch}.g{generation}"


def checksum(path: Path) -> dict[str, tuple[int, str]]:
    """Row count and digest of every table of a read model, runner state left out.

    Rows are compared as a sorted multiset, so the order in which a replay wrote
    them does not matter, but any changed, missing or doubled row does.
    """
    with closing(_read_only(path)) as db:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        sums: dict[str, tuple[int, str]] = {}
        for table in tables:
            if table in RUNNER_STATE:
                continue
            rows = sorted(repr(row) for row in db.execute(f'SELECT * FROM "{table}"'))
            digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
            sums[table] = (len(rows), digest)
    return sums


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Hold an exclusive transaction on a database: no one else can write to it meanwhile."""
    with closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as db:
        db.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
