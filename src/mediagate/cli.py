"""The `mediagate` command: serve, migrate, token, db upgrade, events; upload, ls, download, rm
(the client)."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mediagate import version
from mediagate.arguments import positive_int
from mediagate.client_cli import CLIENT_COMMANDS
from mediagate.client_cli import add_parsers as add_client_parsers

# The server's modules are imported where a command needs them: the client's
# commands start ~0.2 s sooner without their settings, logging and migration code.
if TYPE_CHECKING:
    from mediagate.config import Settings

DEFAULT_TOKEN_TTL = 24 * 3600


def serve(settings: Settings, arguments: argparse.Namespace) -> int:
    from mediagate import supervisor
    from mediagate.catalog.schema import SchemaTooNew
    from mediagate.errors import CatalogUnavailable
    from mediagate.logs import configure_logging
    from mediagate.preflight import check_data_dir, check_listen_host, lock_data_dir

    host = arguments.host or settings.host
    port = arguments.port if arguments.port is not None else settings.port
    workers = arguments.workers if arguments.workers is not None else settings.workers
    refusal = supervisor.several_processes_refusal(settings) if workers > 1 else None
    if refusal is not None:
        print(f"mediagate: {refusal}", file=sys.stderr)
        return 2
    check_data_dir(settings.data_dir)
    check_listen_host(host, port)
    if settings.database_url is None:  # held until this process exits
        lock_data_dir(settings.data_dir)
    configure_logging(settings.log_format)

    # The application is imported here and below, not above: with several workers the
    # supervisor must set up shared metrics before prometheus_client is imported.
    def run(sockets: list[socket.socket] | None = None) -> int:
        from mediagate.web.app import create_app
        from mediagate.web.server import serve as serve_app

        try:
            asyncio.run(
                serve_app(
                    create_app(settings),
                    host=host,
                    port=port,
                    shutdown_timeout=settings.shutdown_timeout,
                    sockets=sockets,
                )
            )
        except (CatalogUnavailable, SchemaTooNew) as error:  # the catalog could not be opened
            print(f"mediagate: {error}", file=sys.stderr)
            return 1
        return 0

    if workers == 1:
        return run()
    bound_port = port

    def listen() -> list[socket.socket]:
        from mediagate.web.server import bind_sockets

        nonlocal bound_port  # port 0: the first worker's port is every worker's
        sockets = bind_sockets(host, bound_port, reuse_port=True)
        bound_port = sockets[0].getsockname()[1]
        return sockets

    return supervisor.supervise(workers, run, listen=listen, stop_timeout=settings.shutdown_timeout)


def upgrade_database(settings: Settings, arguments: argparse.Namespace) -> int:
    from mediagate.catalog.connect import upgrade_catalog
    from mediagate.catalog.schema import SchemaTooNew
    from mediagate.errors import CatalogUnavailable

    try:
        upgrade = asyncio.run(upgrade_catalog(settings))
    except (CatalogUnavailable, SchemaTooNew) as error:
        print(f"mediagate: {error}", file=sys.stderr)
        return 1
    print(upgrade.describe())
    return 0


def events(settings: Settings, arguments: argparse.Namespace) -> int:
    from mediagate.catalog.schema import SchemaTooNew
    from mediagate.errors import CatalogUnavailable

    try:
        return asyncio.run(_events(settings, arguments))
    except (CatalogUnavailable, SchemaTooNew) as error:
        print(f"mediagate: {error}", file=sys.stderr)
        return 1


async def _events(settings: Settings, arguments: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from mediagate.catalog.connect import open_catalog
    from mediagate.events import DeliveryState

    async with open_catalog(settings) as catalog:
        if arguments.retry is not None:
            count = await catalog.requeue_event(arguments.retry, datetime.now(UTC))
            if count == 0:
                print(f"mediagate: no dead event {arguments.retry}", file=sys.stderr)
                return 1
            print(f"{arguments.retry}: {count} delivery(ies) pending again")
            return 0
        for dead in await catalog.events_in_state(DeliveryState.DEAD, arguments.limit):
            print(
                f"{dead.id}\t{dead.type}\t{dead.media_id}\t{dead.endpoint}\t"
                f"{dead.attempts} attempts\t{dead.last_error or ''}"
            )
    return 0


def token(settings: Settings, arguments: argparse.Namespace) -> int:
    from mediagate import tokens  # PyJWT and cryptography: only this command needs them
    from mediagate.preflight import check_data_dir

    create = arguments.create_secret
    if settings.jwt_secret is None and (create or _in_the_way(settings.data_dir)):
        check_data_dir(settings.data_dir)  # says what is wrong with it, in one line
    try:
        secret = tokens.load_secret(settings, create=create)
        print(tokens.issue(secret, arguments.user, arguments.ttl))
    except ValueError as error:
        print(f"mediagate: {error}", file=sys.stderr)
        return 2
    return 0


def _in_the_way(data_dir: Path) -> bool:
    """Whether the data directory exists, or a file stands where it or a parent should be
    (a missing one is not made: `token` refuses to make a secret unasked)."""
    path = data_dir.absolute()
    nearest = next(place for place in (path, *path.parents) if place.exists())
    return nearest == path or not nearest.is_dir()


def parser() -> argparse.ArgumentParser:
    from mediagate.migrate.cli import add_parser as add_migrate_parser

    root = argparse.ArgumentParser(
        prog="mediagate",
        description="Chunked media uploads into S3 or local disk, served with Range support.",
        epilog="Settings come from environment variables and ./.env (see README.md).",
    )
    root.add_argument("--version", action="version", version=f"mediagate {version()}")
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run the HTTP server")
    run.add_argument("--host", help="address to bind (default: MEDIAGATE_HOST, 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to bind (default: MEDIAGATE_PORT, 8080)")
    run.add_argument(
        "--workers",
        type=positive_int,
        help="processes serving the port (default: MEDIAGATE_WORKERS, 1)",
    )
    run.set_defaults(handler=serve)

    add_migrate_parser(commands)

    database = commands.add_parser("db", help="look after the catalog's schema")
    database_commands = database.add_subparsers(dest="db_command", required=True)
    upgrade = database_commands.add_parser(
        "upgrade",
        help="bring the catalog's schema up to date (serve and migrate also do it when they start)",
    )
    upgrade.set_defaults(handler=upgrade_database)

    outbox = commands.add_parser(
        "events", help="list the events no webhook endpoint acknowledged, or send one again"
    )
    action = outbox.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--dead",
        action="store_true",
        help="list dead events: id, type, media, endpoint, attempts, last error",
    )
    action.add_argument("--retry", metavar="ID", help="send the dead event ID again")
    outbox.add_argument(
        "--limit", type=positive_int, default=1000, help="list at most this many (default 1000)"
    )
    outbox.set_defaults(handler=events)

    sign = commands.add_parser("token", help="print a bearer token for a user")
    sign.add_argument("user", help="the user id (the token's `sub`)")
    sign.add_argument(
        "--ttl", type=int, default=DEFAULT_TOKEN_TTL, help="lifetime in seconds (default: 1 day)"
    )
    sign.add_argument(
        "--create-secret",
        action="store_true",
        help="with no MEDIAGATE_JWT_SECRET and no secret in the data directory yet, make it "
        "(as `serve` does on its first start) instead of refusing",
    )
    sign.set_defaults(handler=token)

    add_client_parsers(commands)
    return root


def client_parser() -> argparse.ArgumentParser:
    """The client's commands alone, as `parser()` has them (same usage and errors)."""
    root = argparse.ArgumentParser(prog="mediagate")
    add_client_parsers(root.add_subparsers(dest="command", required=True))
    return root


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words[:1] and words[0] in CLIENT_COMMANDS:
        # A client of some server, anywhere: this machine's server settings do not matter.
        arguments = client_parser().parse_args(words)
        client_status: int = arguments.handler(arguments)
        return client_status
    from mediagate.config import SettingsError, load_settings

    arguments = parser().parse_args(words)
    try:
        status: int = arguments.handler(load_settings(), arguments)
        return status
    except SettingsError as error:
        print(f"mediagate: {error}", file=sys.stderr)
        return 2
