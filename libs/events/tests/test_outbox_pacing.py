"""How often the outbox relay polls: batches gather while events flow, idle relays rest.

Every poll and every batch costs CPU whatever it carries, so the relay waits
``poll_interval`` once it has caught up and polls only every
``idle_poll_interval`` once nothing has come for ``idle_after`` seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ehr_events.config import ServiceSettings, eventsourcing_env
from ehr_events.db import make_engine
from ehr_events.outbox import OutboxRelay, PositionStore
from ehr_events.testing import settings_for_test

from .builders import Notes, test_catalogue, translate

pytestmark = pytest.mark.kafka


class PollLog(OutboxRelay):
    """A relay that notes when each poll started and how many notifications it moved."""

    polls: list[tuple[float, int]]

    async def run_once(self) -> int:
        started = asyncio.get_running_loop().time()
        moved = await super().run_once()
        self.polls.append((started, moved))
        return moved


def make_relay(tmp_path: Path, broker: str, **pacing: float) -> PollLog:
    settings = settings_for_test(ServiceSettings, tmp_path)
    relay = PollLog(
        Notes(env=eventsourcing_env(settings, "testing")),
        translate,
        source="testing",
        positions=PositionStore(make_engine(settings, "testing"), "testing"),
        bootstrap=broker,
        topic=f"ehr.testing{uuid.uuid4().hex[:6]}.events",
        batch_size=5,
        catalogue=test_catalogue,
        **pacing,
    )
    relay.polls = []
    return relay


async def run_while(relay: OutboxRelay, story: Callable[[], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await story()
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def gaps_after(polls: list[tuple[float, int]], index: int) -> list[float]:
    """Seconds between the start of each poll and the next, from poll ``index`` on."""
    starts = [started for started, _ in polls[index:]]
    return [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]


def test_a_relay_that_caught_up_waits_before_it_polls_again(tmp_path: Path, broker: str) -> None:
    relay = make_relay(tmp_path, broker, poll_interval=0.4, idle_after=60)
    for i in range(3):  # fewer than a batch: the first poll catches up
        relay.app.take(f"patient-{i}", "note")

    async def story() -> None:
        while len(relay.polls) < 3:
            await asyncio.sleep(0.05)

    asyncio.run(run_while(relay, story))

    assert relay.polls[0][1] == 3
    # no poll right after the batch: events written meanwhile gather into the next one
    assert min(gaps_after(relay.polls, 0)) >= 0.35


def test_a_full_batch_is_followed_at_once_by_the_next(tmp_path: Path, broker: str) -> None:
    relay = make_relay(tmp_path, broker, poll_interval=0.4, idle_after=60)
    for i in range(12):
        relay.app.take(f"patient-{i % 3}", f"note {i}")

    async def story() -> None:
        while sum(moved for _, moved in relay.polls) < 12:
            await asyncio.sleep(0.02)

    asyncio.run(run_while(relay, story))

    assert [moved for _, moved in relay.polls] == [5, 5, 2]
    assert max(gaps_after(relay.polls, 0)) < 0.35
    assert relay.positions.get() == 12


def test_an_idle_relay_polls_less_often_and_still_relays(tmp_path: Path, broker: str) -> None:
    relay = make_relay(tmp_path, broker, poll_interval=0.05, idle_after=0.3, idle_poll_interval=0.4)

    async def story() -> None:
        await asyncio.sleep(2.0)
        idle_polls = len(relay.polls)
        relay.app.take("patient-1", "after a quiet while")
        while relay.published < 1:
            await asyncio.sleep(0.02)
        assert len(relay.polls) - idle_polls <= 2  # published by the next poll
        await asyncio.sleep(0.2)  # something moved: short waits again, until idle_after

    asyncio.run(run_while(relay, story))

    # every 0.05 s that would be 40 polls in the quiet 2 s; here about 7 in the
    # first 0.3 s, then one every 0.4 s
    quiet = [p for p in relay.polls if p[0] - relay.polls[0][0] < 2.0]
    assert len(quiet) <= 14
    assert min(gaps_after(quiet, 8)) >= 0.35
    # once something moved, the relay polls at the short interval again
    moved_at = next(i for i, (_, moved) in enumerate(relay.polls) if moved)
    assert max(gaps_after(relay.polls, moved_at)) < 0.2
    assert relay.positions.get() == 1
