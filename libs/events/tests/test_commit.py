"""Offset commits of the projection runner: a resume point, never a reason to stall."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from ehr_events.projection import ConsumerStalled, _commit

TP = TopicPartition("ehr.records.events", 0)


class ConsumerWhoseCommit:
    """The two calls ``_commit`` makes of a consumer, the commit answering as told."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.committed: dict[TopicPartition, int] = {}

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.outcome == "hangs":
            await asyncio.Event().wait()
        if self.outcome == "is refused":
            raise CommitFailedError("the group rebalanced")
        self.committed.update(offsets)


def test_a_commit_that_never_ends_stalls_the_consumer_within_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(ConsumerStalled):
        asyncio.run(_commit(ConsumerWhoseCommit("hangs"), {TP: 5}, timeout=0.2))  # type: ignore[arg-type]
    assert time.monotonic() - started < 5


def test_a_refused_commit_is_not_an_error() -> None:
    consumer = ConsumerWhoseCommit("is refused")
    asyncio.run(_commit(consumer, {TP: 5}, timeout=0.2))  # type: ignore[arg-type]
    assert consumer.committed == {}


def test_only_partitions_still_assigned_are_committed() -> None:
    consumer = ConsumerWhoseCommit("succeeds")
    other = TopicPartition("ehr.records.events", 1)
    asyncio.run(_commit(consumer, {TP: 5, other: 9}))  # type: ignore[arg-type]
    assert consumer.committed == {TP: 5}
