"""``python -m projections serve | run <name> | rebuild <name>``."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal

from ehr_events.config import load_settings
from ehr_events.logs import configure_logging
from ehr_events.process import event_loop_factory, run_worker, serve_http
from ehr_events.projection import partition_count

from .config import ProjectionsSettings
from .readmodels import NAMES, process_runner

log = logging.getLogger("projections")


def serve(settings: ProjectionsSettings, host: str, port: int) -> None:

    from .main import create_app

    configure_logging("projections", settings.log_dir)
    serve_http(create_app(settings), host, port)


def run(settings: ProjectionsSettings, name: str) -> None:
    runner = process_runner(settings, name, f"projector-{name}")
    log.info("projector %s follows %s", name, ", ".join(runner.projection.topics))
    run_worker(runner.run)


def default_workers(partitions: int) -> int:
    """One rebuild process per partition, at most two per core, at least one."""
    return max(1, min(partitions, 2 * (os.cpu_count() or 1)))


def rebuild(
    settings: ProjectionsSettings, name: str, idle_seconds: float, workers: int | None = None
) -> int:
    runner = process_runner(settings, name, f"projector-{name}")

    async def rebuilding(workers: int) -> int:
        # SIGTERM (a stopped job) ends the rebuild as Ctrl-C does: its processes
        # stopped, the read model's indexes built, nothing left half done
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await runner.rebuild(
            idle_seconds=idle_seconds,
            workers=workers,
            factory=functools.partial(
                process_runner, settings, name, f"rebuild-{name}", indexes=False
            ),
        )

    with asyncio.Runner(loop_factory=event_loop_factory()) as loop:
        if workers is None:
            partitions = loop.run(partition_count(runner.bootstrap, runner.projection.topics))
            workers = default_workers(partitions)
        log.info("rebuilding %s in %d process(es)", name, workers)
        try:
            count = loop.run(rebuilding(workers))
        except RuntimeError as exc:  # a rebuild process failed: its log says why
            raise SystemExit(f"{exc} (see {settings.log_dir / f'rebuild-{name}.log'})") from None
        except asyncio.CancelledError:
            raise SystemExit(
                f"rebuild of {name} stopped before its end: run it again "
                "(the read model has its indexes, not all its events)"
            ) from None
    print(f"{name}: indexes built in {runner.index_seconds:.3f}s")
    print(f"{name}: rebuilt from {count} events")
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m projections", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve the HTTP API")
    serve_parser.add_argument("--host", default=None)
    serve_parser.add_argument("--port", type=int, default=None)
    run_parser = commands.add_parser("run", help="follow the topics into a read model")
    run_parser.add_argument("name", choices=NAMES)
    rebuild_parser = commands.add_parser("rebuild", help="drop a read model and replay")
    rebuild_parser.add_argument("name", choices=NAMES)
    rebuild_parser.add_argument(
        "--idle-seconds", type=float, default=3.0, help="stop after this long without events"
    )
    rebuild_parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes replaying in parallel (default: one per partition, at most two per core)",
    )
    args = parser.parse_args(argv)

    settings = load_settings(ProjectionsSettings, "projections")
    if args.command == "serve":
        serve(settings, args.host or settings.host, args.port or settings.port)
    elif args.command == "run":
        run(settings, args.name)
    else:
        if args.workers is not None and args.workers < 1:
            parser.error("--workers must be at least 1")
        rebuild(settings, args.name, args.idle_seconds, args.workers)


if __name__ == "__main__":
    main()
