"""``python -m gateway serve|relay``: the HTTP edge, or the relay of its access decisions."""

from __future__ import annotations

import argparse
import logging

from ehr_events.config import load_settings
from ehr_events.logs import configure_logging
from ehr_events.outbox import run_relay
from ehr_events.process import serve_http

from .access import open_gateway_application
from .config import GatewaySettings
from .relay import translate

log = logging.getLogger("gateway")


def serve(settings: GatewaySettings, host: str, port: int) -> None:

    from .main import create_app

    configure_logging("gateway", settings.log_dir)
    log.info("gateway listening on %s:%d (profile %s)", host, port, settings.profile)
    serve_http(create_app(settings), host, port)


#: Access decisions feed the audit trail only, whose projector gathers a quarter
#: second anyway: batches that long cost a fraction of the CPU of one every 50 ms
#: (every request, reads too, adds a decision), and no request waits for them.
RELAY_POLL_SECONDS = 0.25


def relay(settings: GatewaySettings) -> None:
    run_relay(
        settings,
        "gateway",
        lambda: open_gateway_application(settings),
        translate,
        poll_interval=RELAY_POLL_SECONDS,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the HTTP gateway")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    commands.add_parser("relay", help="publish access decisions to ehr.gateway.events")
    args = parser.parse_args(argv)
    settings = load_settings(GatewaySettings, "gateway")
    if args.command == "serve":
        serve(settings, args.host, args.port)
    else:
        relay(settings)


if __name__ == "__main__":
    main()
