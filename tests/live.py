"""Run an ASGI app under a real uvicorn server on a free loopback port, in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """A uvicorn server that signals when it has started listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextlib.asynccontextmanager
async def live_server(app: Any, **options: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1:<free port>; yields ``"127.0.0.1:PORT"``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options.setdefault("ws", "websockets-sansio")
    config = uvicorn.Config(app, log_level="warning", lifespan="on", **options)
    server = _Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            waiter = asyncio.ensure_future(server.ready.wait())
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            if not server.ready.is_set():
                waiter.cancel()
                task.result()
                raise RuntimeError("uvicorn stopped during start-up")
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
        sock.close()
