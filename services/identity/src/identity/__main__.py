"""Command line of the identity service.

python -m identity serve [--host 127.0.0.1] [--port 8001]
python -m identity relay
python -m identity rotate-key
python -m identity create-organization --name NAME
python -m identity create-user --username U --role R [--role R2] [--organization NAME]
    (the password is read from standard input, never from the command line)
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from ehr_events.logs import configure_logging
from ehr_events.outbox import run_relay
from ehr_events.process import serve_http
from ehr_events.security import Role

from .application import IdentityApplication
from .config import IdentitySettings
from .domain.errors import IdentityError


def serve(settings: IdentitySettings, host: str, port: int) -> int:

    from .main import create_app

    configure_logging("identity", settings.log_dir)
    serve_http(create_app(settings), host, port)
    return 0


def relay(settings: IdentitySettings) -> int:
    from .relay import translate

    run_relay(settings, "identity", lambda: IdentityApplication(settings), translate)
    return 0


def rotate_key(settings: IdentitySettings) -> int:
    identity = IdentityApplication(settings)
    try:
        kid, retired = identity.rotate_signing_key(actor={"sub": "cli", "role": "admin"})
    finally:
        identity.close()
    print(f"active key {kid}; retired key {retired} stays in the JWKS until its tokens expire")
    return 0


def read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != first:
            raise SystemExit("identity: the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def create_user(
    settings: IdentitySettings, username: str, roles: Sequence[str], organization: str | None
) -> int:
    password = read_password()
    identity = IdentityApplication(settings)
    try:
        organization_id = identity.resolve_organization(organization) if organization else None
        user = identity.register_user(
            username, password, roles, organization_id, actor={"sub": "cli", "role": "admin"}
        )
    finally:
        identity.close()
    print(user.id)
    return 0


def create_organization(settings: IdentitySettings, name: str) -> int:
    identity = IdentityApplication(settings)
    try:
        organization = identity.register_organization(name, actor={"sub": "cli", "role": "admin"})
    finally:
        identity.close()
    print(organization.id)
    return 0


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="python -m identity", description="The identity service.")
    commands = cli.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve the HTTP API")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8001)
    commands.add_parser("relay", help="relay the event log to Kafka")
    commands.add_parser("rotate-key", help="activate a new signing key, retire the current one")
    org_cmd = commands.add_parser("create-organization", help="register an organisation")
    org_cmd.add_argument("--name", required=True)
    user_cmd = commands.add_parser(
        "create-user", help="register a user; the password is read from standard input"
    )
    user_cmd.add_argument("--username", required=True)
    user_cmd.add_argument(
        "--role", dest="roles", action="append", required=True, choices=[r.value for r in Role]
    )
    user_cmd.add_argument("--organization", help="name (or id) of an existing organisation")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = IdentitySettings()
    except ValidationError as exc:
        # the messages only: the error's input values would include the cipher key
        for error in exc.errors():
            print(f"identity: settings: {error['msg']}", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return serve(settings, args.host, args.port)
        if args.command == "relay":
            return relay(settings)
        if args.command == "rotate-key":
            return rotate_key(settings)
        if args.command == "create-organization":
            return create_organization(settings, args.name)
        return create_user(settings, args.username, args.roles, args.organization)
    except IdentityError as exc:
        print(f"identity: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
