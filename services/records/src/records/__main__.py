"""``python -m records serve|relay``: the HTTP API, or the outbox relay."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ehr_events.config import load_settings
from ehr_events.process import serve_http

from .config import SERVICE, RecordsSettings


def serve(settings: RecordsSettings, host: str, port: int) -> None:

    from ehr_events.logs import configure_logging

    from .main import create_app

    configure_logging(SERVICE, settings.log_dir)
    serve_http(create_app(settings), host, port)


def relay(settings: RecordsSettings) -> None:
    from ehr_events.outbox import run_relay

    from .application import RecordsApplication
    from .relay import translate

    run_relay(
        settings,
        SERVICE,
        lambda: RecordsApplication.from_settings(settings),
        translate,
        batch_size=settings.relay_batch_size,
        poll_interval=settings.relay_poll_seconds,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m records", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the HTTP API")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8002)
    commands.add_parser("relay", help="relay the event store to ehr.records.events")
    args = parser.parse_args(argv)
    settings = load_settings(RecordsSettings, "records")
    if args.command == "serve":
        serve(settings, args.host, args.port)
    else:
        relay(settings)


if __name__ == "__main__":
    main()
