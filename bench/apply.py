"""The rebuild's apply path alone: ``python -m bench.apply [--events N]``.

Decodes, folds and writes the benchmark's ``PatientRegisteredV1`` records into a
fresh chart read model (a temporary ``var`` folder, SQLite) in one process,
through ``ProjectionRunner.apply_batch`` in the rebuild's batch size, with no
broker: the records are built as aiokafka hands them to the runner. What it
prints, CPU per event and events per second, is the floor under the rebuild
figure of ``make bench``; the difference is the Kafka client, the processes'
start and join, and the processes sharing the cores.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

from aiokafka.structs import ConsumerRecord

from .broker import RECORDS_TOPIC, registration


def records(count: int, partitions: int = 3) -> list[ConsumerRecord[bytes, bytes]]:
    rng = random.Random(1)
    run = uuid.uuid4().hex[:8]
    start = datetime.now(UTC) - timedelta(days=1)
    out = []
    for i in range(count):
        key, value, headers = registration(i, run, rng, start + timedelta(milliseconds=i))
        out.append(
            ConsumerRecord(
                topic=RECORDS_TOPIC,
                partition=i % partitions,
                offset=i // partitions,
                timestamp=0,
                timestamp_type=0,
                key=key,
                value=value,
                checksum=None,
                serialized_key_size=len(key),
                serialized_value_size=len(value),
                headers=tuple(headers),
            )
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.apply", description=__doc__)
    parser.add_argument("--events", type=int, default=60_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ehr-bench-apply-") as var:
        os.environ["EHR_VAR_DIR"] = var
        from ehr_events.config import load_settings
        from projections.config import ProjectionsSettings
        from projections.readmodels import make_runner

        settings = load_settings(ProjectionsSettings, "projections")
        runner = make_runner(settings, "chart", indexes=False)
        generation = runner.reset(indexes=False)
        batch = runner.rebuild_batch_size
        todo = records(args.events)
        cpu, wall = time.process_time(), time.perf_counter()
        applied = 0
        for i in range(0, len(todo), batch):
            applied += runner.apply_batch(todo[i : i + batch], generation) or 0
        applying_cpu, applying_wall = time.process_time() - cpu, time.perf_counter() - wall
        started = time.perf_counter()
        runner.create_indexes()
        index_seconds = time.perf_counter() - started
        runner.engine.dispose()
    print(
        f"{applied:,} events applied in batches of {batch:,}: "
        f"{applying_cpu / applied * 1e6:.0f} µs of CPU per event, "
        f"{applied / applying_wall:,.0f} events/s; indexes built in {index_seconds:.2f}s"
    )


if __name__ == "__main__":
    main()
