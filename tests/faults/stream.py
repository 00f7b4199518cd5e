"""The stream between the event stores and the read models, seen from outside.

"Quiet" means: every relay has published its whole store, and each read model's
consumer group has committed (after applying) every record of its topics. Then
a read model's contents are final, and can be compared.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter

from aiokafka import AIOKafkaConsumer, TopicPartition

from ehr_events.devplatform import Platform

from .fhirclient import wait_until
from .stores import PUBLISHERS, consumer_group, relay_progress

#: The topics each read model follows.
MODEL_TOPICS = {
    "chart": ("ehr.records.events",),
    "audit": ("ehr.records.events", "ehr.identity.events", "ehr.gateway.events"),
}


def bootstrap(platform: Platform) -> str:
    return f"127.0.0.1:{platform.ports['broker']}"


async def _offsets(servers: str, group: str, topics: tuple[str, ...]) -> list[tuple[int, int]]:
    """(end offset, committed offset of ``group``) of every partition of ``topics``.

    The end offset is the high watermark of a fetch: the development broker
    answers ListOffsets with the start of the last batch, not the end of the log.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=group,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        await consumer.topics()  # refreshes the metadata
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return []
        consumer.assign(partitions)
        for partition in partitions:
            consumer.seek(partition, 0)
        while any(consumer.highwater(p) is None for p in partitions):
            await consumer.getmany(timeout_ms=100, max_records=1)
        pairs = []
        for partition in partitions:
            committed = await consumer.committed(partition)
            pairs.append((int(consumer.highwater(partition) or 0), committed or 0))
        return pairs
    finally:
        await consumer.stop()


def lag(platform: Platform, model: str) -> int:
    """Records of the model's topics its consumer group has not committed yet."""
    group = consumer_group(platform.var_dir, model)
    pairs = asyncio.run(
        asyncio.wait_for(_offsets(bootstrap(platform), group, MODEL_TOPICS[model]), 20)
    )
    return sum(end - committed for end, committed in pairs)


async def _event_ids(servers: str, topics: tuple[str, ...]) -> Counter[str]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        for partition in partitions:
            consumer.seek(partition, 0)
        ids: Counter[str] = Counter()
        # read every partition up to the high watermark its first fetch reported
        while True:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    ids[dict(record.headers)["ce_id"].decode()] += 1
            behind = 0
            for partition in partitions:
                end = consumer.highwater(partition)
                behind += end is None or await consumer.position(partition) < end
            if not behind:
                return ids
    finally:
        await consumer.stop()


def event_ids_on(platform: Platform, topics: tuple[str, ...]) -> Counter[str]:
    """How many times the broker holds each event (by envelope id) on ``topics``."""
    return asyncio.run(asyncio.wait_for(_event_ids(bootstrap(platform), topics), 30))


def stream_state(platform: Platform) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    relays = tuple(relay_progress(platform.var_dir, service) for service in PUBLISHERS)
    lags = tuple(lag(platform, model) for model in MODEL_TOPICS)
    return relays, lags


def wait_until_quiet(platform: Platform, timeout: float = 60) -> None:
    """Block until the stream is quiet twice in a row, half a second apart."""
    # the gateway saves its access decisions off the request path, within half a second
    time.sleep(1.0)
    previous: list[object] = [None]

    def quiet_and_steady(state: tuple) -> bool:
        relays, lags = state
        quiet = all(last == position for last, position in relays) and not any(lags)
        steady = state == previous[0]
        previous[0] = state
        return quiet and steady

    wait_until(
        lambda: stream_state(platform),
        quiet_and_steady,
        timeout=timeout,
        what="a quiet stream (relays published everything, projectors committed everything)",
    )


def rebuild(platform: Platform, *models: str, timeout: float = 90) -> dict[str, int]:
    """``python -m projections rebuild <model>`` for each model, side by side.

    Returns how many events each rebuilt model holds, as the command reports it.
    """
    commands = {
        model: subprocess.Popen(
            [sys.executable, "-m", "projections", "rebuild", model, "--idle-seconds", "4"],
            env=platform.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for model in models
    }
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    for model, process in commands.items():
        try:
            out, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in commands.values():
                other.kill()
            raise AssertionError(f"rebuild of {model} still running after {timeout}s") from None
        assert process.returncode == 0, (model, process.returncode, out)
        # "<model>: rebuilt from <n> events"
        counts[model] = int(out.decode().strip().splitlines()[-1].split()[-2])
    return counts
