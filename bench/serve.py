"""Run one benchmark app under uvicorn on an inherited listening socket.

``python -m bench.serve MODULE:APP FD``: every server runs with the same settings (uvloop,
httptools, websockets-sansio, permessage-deflate off, no access log). Several processes given
the same socket share its connections, as ``uvicorn --workers`` does.
"""

from __future__ import annotations

import socket
import sys

import uvicorn

from bench.common import raise_open_files

SETTINGS = {
    "loop": "uvloop",
    "http": "httptools",
    "ws": "websockets-sansio",
    "ws_per_message_deflate": False,
    "log_level": "warning",
    "access_log": False,
    "lifespan": "on",
    "backlog": 4096,
}


def main() -> None:
    app, fd = sys.argv[1], int(sys.argv[2])
    raise_open_files()  # the huge plan holds up to 100,000 sockets in one process
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(app, **SETTINGS)  # type: ignore[arg-type]
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
