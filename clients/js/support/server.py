"""Serve ``tests/client_app.py`` for the Node tests on a free loopback port.

Prints ``{"port": N}`` on one line once the server accepts connections, and stops when its
standard input closes (the Node test process went away) or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.client_app import create_app


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        print(json.dumps({"port": self.config.port}), flush=True)


def main() -> None:
    """Serve until standard input closes or a signal arrives."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(), port=port, log_level="warning", lifespan="on", ws="websockets-sansio"
    )
    server = _Server(config)

    def watch_stdin() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=watch_stdin, daemon=True).start()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
