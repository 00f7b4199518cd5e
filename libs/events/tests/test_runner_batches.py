"""The projection runner without a broker: batches, idempotency, stopping its consumer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import time
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from ehr_events.config import ServiceSettings
from ehr_events.db import make_engine
from ehr_events.projection import ProjectionRunner, _stop, collector_paused
from ehr_events.testing import settings_for_test

from .builders import NotesProjection, NoteTakenV2, envelope_for, test_catalogue


def note(event_id: str, patient_id: str) -> tuple:
    event = NoteTakenV2(note_id=event_id, patient_id=patient_id, text="t", language="en")
    return envelope_for(event, event_id), event


class RunnerBatchesOnSQLite:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> ServiceSettings:
        return settings_for_test(ServiceSettings, tmp_path)

    @pytest.fixture
    def runner(self, settings: ServiceSettings) -> ProjectionRunner:
        return ProjectionRunner(
            NotesProjection(),
            make_engine(settings, "testing", "notes"),
            bootstrap="127.0.0.1:1",
            catalogue=test_catalogue,
        )

    @staticmethod
    def counts(runner: ProjectionRunner) -> dict[str, int]:
        with runner.engine.connect() as conn:
            return {p: int(c) for p, c in conn.execute(select(NotesProjection.counts)).all()}

    def test_a_projection_without_a_batch_method_gets_each_new_event_once(
        self, runner: ProjectionRunner
    ) -> None:
        a, b, c = note("e-a", "p-1"), note("e-b", "p-1"), note("e-c", "p-2")
        # duplicates within one batch count once
        assert runner.apply_envelopes([a, b, a, b]) == 2
        # events of an earlier batch are skipped, the new one applies
        assert runner.apply_envelopes([b, c, a]) == 1
        assert runner.apply_envelopes([a, b, c]) == 0
        assert self.counts(runner) == {"p-1": 2, "p-2": 1}
        assert runner.applied_count() == 3

    def test_a_batch_larger_than_one_in_clause_is_checked_whole(
        self, runner: ProjectionRunner
    ) -> None:
        notes = [note(f"e-{i}", f"p-{i % 7}") for i in range(1234)]
        assert runner.apply_envelopes(notes[:700]) == 700
        assert runner.apply_envelopes(notes) == 534
        assert sum(self.counts(runner).values()) == runner.applied_count() == 1234


class TestRunnerBatchesOnSQLite(RunnerBatchesOnSQLite):
    def test_the_collector_is_paused_while_a_batch_applies(self, runner: ProjectionRunner) -> None:
        enabled: list[bool] = []
        apply_batch = runner.projection.apply_batch

        def watching(conn, items):  # type: ignore[no-untyped-def]
            enabled.append(gc.isenabled())
            apply_batch(conn, items)

        runner.projection.apply_batch = watching  # type: ignore[method-assign]
        assert gc.isenabled()
        assert runner.apply_envelopes([note("e-a", "p-1")]) == 1
        assert runner.apply_batch([], runner.generation()) == 0
        assert enabled == [False] and gc.isenabled()

    def test_the_collector_resumes_after_a_failed_batch(self, runner: ProjectionRunner) -> None:
        def failing(conn, items):  # type: ignore[no-untyped-def]
            raise RuntimeError("the database went away")

        runner.projection.apply_batch = failing  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            runner.apply_envelopes([note("e-a", "p-1")])
        assert gc.isenabled()
        assert runner.applied_count() == 0

    @pytest.mark.parametrize("bounded", [False, True])
    def test_a_log_that_readers_keep_from_rewinding_is_truncated(
        self, runner: ProjectionRunner, bounded: bool
    ) -> None:
        """A reader's snapshot overlaps every commit (as the API's reads and a rebuild's
        progress do): SQLite's own checkpoint never lets the log rewind, the runner does."""
        limit = 64 << 10
        runner.wal_limit_bytes = limit if bounded else 1 << 40
        database = runner.engine.url.database
        assert database
        wal = Path(f"{database}-wal")
        reader = sqlite3.connect(database, isolation_level=None)
        apply_batch, bound_wal = runner.projection.apply_batch, runner.bound_wal

        def read_during(conn, items):  # type: ignore[no-untyped-def]
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM notes_per_patient").fetchone()
            apply_batch(conn, items)

        def read_ended() -> bool:
            reader.execute("COMMIT")
            return bound_wal()

        runner.projection.apply_batch = read_during  # type: ignore[method-assign]
        runner.bound_wal = read_ended  # type: ignore[method-assign]
        sizes = []
        for b in range(40):
            batch = [note(f"e-{b}-{i}", f"p-{b}-{i}") for i in range(50)]
            assert runner.apply_envelopes(batch) == 50
            sizes.append(wal.stat().st_size)
        reader.close()
        assert runner.applied_count() == 2000
        if bounded:
            # at most one batch's pages past the limit, and truncated on the way
            assert max(sizes) < 2 * limit
            assert min(sizes) == 0
        else:
            # the starvation the runner guards against
            assert sizes == sorted(sizes) and sizes[-1] > 8 * limit


def test_the_collector_resumes_once_no_batch_is_applying() -> None:
    # batches of two runners (threads) overlap: the first to end leaves it paused
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_paused_by_the_process_stays_paused() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.postgres
class TestRunnerBatchesOnPostgreSQL(RunnerBatchesOnSQLite):
    @pytest.fixture
    def settings(self, postgres_service_settings: ServiceSettings) -> ServiceSettings:
        return postgres_service_settings

    def test_each_batch_is_planned_for_its_own_ids(self, runner: ProjectionRunner) -> None:
        modes: list[str] = []
        apply_batch = runner.projection.apply_batch

        def watching(conn, items):  # type: ignore[no-untyped-def]
            modes.append(conn.exec_driver_sql("SHOW plan_cache_mode").scalar_one())
            apply_batch(conn, items)

        runner.projection.apply_batch = watching  # type: ignore[method-assign]
        runner.apply_envelopes([note("e-a", "p-1")])
        assert modes == ["force_custom_plan"]
        # only for the batch's own transaction
        with runner.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar_one() == "auto"


class StopLikeAiokafka:
    """What ``AIOKafkaConsumer.stop()`` does when it follows the loss of the group.

    Its fetcher, dropping the lost assignment, awaits its in-flight requests with
    ``CancelledError`` suppressed; cancelled right then, it swallows its own
    cancellation and goes on to wait for an assignment that never comes, while
    ``stop()`` awaits it (aiokafka 0.14, ``Fetcher._fetch_requests_routine``).
    """

    def __init__(self) -> None:
        self.stopped = False

    async def _fetcher(self) -> None:
        in_flight = asyncio.ensure_future(asyncio.sleep(0.05))
        with contextlib.suppress(asyncio.CancelledError):
            await in_flight
        await asyncio.Event().wait()  # the next assignment

    async def stop(self) -> None:
        fetcher = asyncio.ensure_future(self._fetcher())
        await asyncio.sleep(0)
        fetcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetcher
        self.stopped = True


def test_a_consumer_whose_stop_hangs_is_still_stopped() -> None:
    consumer = StopLikeAiokafka()
    started = time.monotonic()
    asyncio.run(_stop(consumer, "notes", timeout=0.3))  # type: ignore[arg-type]
    assert consumer.stopped
    assert time.monotonic() - started < 2


class IndexesFailToo(ProjectionRunner):
    """A runner whose database goes away between the replay and the index build."""

    def create_indexes(self) -> None:
        raise OperationalError("CREATE INDEX", {}, Exception("the database went away"))


def test_a_rebuild_whose_index_build_fails_too_raises_the_replays_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ehr_events.devinfra import free_port

    settings = settings_for_test(ServiceSettings, tmp_path)
    runner = IndexesFailToo(
        NotesProjection(),
        make_engine(settings, "testing", "notes"),
        bootstrap=f"127.0.0.1:{free_port()}",  # no broker there: the replay fails
        catalogue=test_catalogue,
        indexes=False,
    )
    with pytest.raises(KafkaConnectionError):
        asyncio.run(asyncio.wait_for(runner.rebuild(idle_seconds=1, show_progress=False), 60))
    assert "indexes not built after the failed rebuild (OperationalError)" in caplog.text
