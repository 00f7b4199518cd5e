"""``python -m projections serve | run <name> | rebuild <name>``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging

from ehr_events.config import load_settings
from ehr_events.logs import configure_logging
from ehr_events.process import run_worker

from .config import ProjectionsSettings
from .readmodels import NAMES, make_runner

log = logging.getLogger("projections")


def serve(settings: ProjectionsSettings, host: str, port: int) -> None:
    import uvicorn

    from .main import create_app

    configure_logging("projections", settings.log_dir)
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_config=None)


def collect_less_often() -> None:
    """Tune the garbage collector of a projector process, once it has started.

    A batch holds thousands of decoded events, and their FHIR resources, until
    it is written: at the default thresholds the collector walks them over and
    over (a third of a rebuild's CPU, mostly in full collections). What startup
    loaded is frozen out of the collections; young collections run every 50 000
    allocations instead of 700, full ones every ten million.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def run(settings: ProjectionsSettings, name: str) -> None:
    configure_logging(f"projector-{name}", settings.log_dir)
    runner = make_runner(settings, name)
    collect_less_often()
    log.info("projector %s follows %s", name, ", ".join(runner.projection.topics))
    run_worker(runner.run)


def rebuild(settings: ProjectionsSettings, name: str, idle_seconds: float) -> int:
    configure_logging(f"projector-{name}", settings.log_dir)
    runner = make_runner(settings, name)
    collect_less_often()
    count = asyncio.run(runner.rebuild(idle_seconds=idle_seconds))
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
    args = parser.parse_args(argv)

    settings = load_settings(ProjectionsSettings, "projections")
    if args.command == "serve":
        serve(settings, args.host or settings.host, args.port or settings.port)
    elif args.command == "run":
        run(settings, args.name)
    else:
        rebuild(settings, args.name, args.idle_seconds)


if __name__ == "__main__":
    main()
