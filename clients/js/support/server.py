"""Serve ``tests/client_app.py`` (or ``--app module:attribute``) for the Node tests.

Prints ``{"port": N}`` on one line once the server accepts connections on a free loopback port,
and stops when its standard input closes (the Node test process went away) or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import importlib
import json
import socket
import sys
import threading
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from fastapi_channels import Limits
from tests.client_app import create_app, create_jwt_app


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        print(json.dumps({"port": self.config.port}), flush=True)


def main() -> None:
    """Serve until standard input closes or a signal arrives."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-connections", type=int, default=None)
    parser.add_argument("--max-connections-per-user", type=int, default=None)
    parser.add_argument("--jwt", action="store_true", help="serve create_jwt_app() instead")
    parser.add_argument(
        "--app", help="serve this app instead, e.g. docs.examples.private.private_chat:app"
    )
    args = parser.parse_args()
    limits = Limits(
        max_connections=args.max_connections,
        max_connections_per_user=args.max_connections_per_user,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    if args.app:
        module, _, attribute = args.app.partition(":")
        app = getattr(importlib.import_module(module), attribute or "app")
    else:
        app = create_jwt_app() if args.jwt else create_app(limits)
    config = uvicorn.Config(
        app,
        port=port,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
    )
    server = _Server(config)

    def watch_stdin() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=watch_stdin, daemon=True).start()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
