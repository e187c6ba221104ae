"""The ``fastapi-channels`` console command.

Subcommands:

``connect``
    A terminal client of a running app: subscribe, print events, send an event or a request
    (see `fastapi_channels.client.cli`). Needs the ``client`` extra.

``publish``
    Publish an event through an app's HTTP API (see `fastapi_channels.publish`); the
    standard library only.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="fastapi-channels", description="Tools for fastapi_channels apps."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connect = commands.add_parser(
        "connect",
        help="connect to an app, subscribe, print events, send events or requests",
        description="Connect to a fastapi_channels (or Envuso) websocket endpoint.",
    )
    try:
        from fastapi_channels.client import cli as client_cli
    except ImportError as exc:
        message = str(exc)
        connect.set_defaults(run=lambda _args: _missing(message))
    else:
        client_cli.add_arguments(connect)
        connect.set_defaults(run=client_cli.run)
    from fastapi_channels import publish

    publishing = commands.add_parser(
        "publish",
        help="publish an event through an app's HTTP API",
        description="Publish an event to a channel through a fastapi_channels app's HTTP API.",
    )
    publish.add_arguments(publishing)
    publishing.set_defaults(run=publish.run)
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


def _missing(message: str) -> int:
    print(f"fastapi-channels: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
