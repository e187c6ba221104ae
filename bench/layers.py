"""Where one delivery's server time goes, layer by layer, without the kernel.

``python -m bench.layers`` drives uvicorn's websockets-sansio protocol over an in-memory
transport (``write`` only appends) and times one text frame of the benchmark's size sent:

- ``uvicorn send``: the server's ASGI ``send`` itself (websocket framing, then ``write``);
- ``+ starlette``: ``WebSocket.send_text`` through the route's and the app's wrappers, as the
  hand-written endpoint sends;
- ``fastapi_channels push``: ``SocketConnection.push`` to an idle connection, as a broadcast
  hands a frame to each subscriber, through ASGI ``send`` (``Limits(direct_writes=False)``, or
  behind a middleware that wraps ``send``) and written directly (the default under uvicorn).

Each figure is the median of several timed loops, in microseconds per frame. The kernel's share
(the ``write`` system call on a loopback socket and the wake-up of the reader) is what the null
server's CPU per delivery shows in the main benchmark.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from bench.common import EVENT, payload
from fastapi_channels.core.connection import SocketConnection
from fastapi_channels.edge._direct import DirectWrites
from fastapi_channels.edge.router import _ASGITransport

FRAME = json.dumps({"event": EVENT, "channel": "bench", "data": payload(0)}, separators=(",", ":"))
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class MemoryTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.size = 0

    def write(self, data: Any) -> None:
        self.size += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def connected_protocol() -> tuple[WebSocketsSansIOProtocol, Any]:
    """A protocol past its handshake, and the ``send`` its ASGI app was given."""
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        ready.set_result(send)
        while (await receive())["type"] != "websocket.disconnect":
            pass

    config = Config(
        app=app,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",
        log_level="warning",
    )
    config.load()
    protocol = WebSocketsSansIOProtocol(config, ServerState(), app_state={})
    protocol.connection_made(MemoryTransport())
    protocol.data_received(HANDSHAKE)
    send = await asyncio.wait_for(ready, 5)
    return protocol, send


def wrap(send: Any) -> Any:
    """A Starlette exception-handling wrapper around ``send``, as each layer adds one."""

    async def sender(message: Any) -> None:
        if message["type"] == "http.response.start":
            pass
        await send(message)

    return sender


async def timed(label: str, step: Callable[[], Awaitable[None] | bool], n: int) -> float:
    runs = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(n):
            result = step()
            if result is not None and not isinstance(result, bool):
                await result
        runs.append((time.perf_counter() - start) / n * 1e6)
    value = statistics.median(runs)
    print(f"{label:<40} {value:6.2f} µs/frame")
    return value


async def main(n: int = 20000) -> dict[str, float]:
    protocol, raw_send = await connected_protocol()
    app_send = wrap(raw_send)  # the app-level ExceptionMiddleware
    websocket = WebSocket({"type": "websocket", "path": "/ws", "headers": []}, None, wrap(app_send))  # type: ignore[arg-type]
    websocket.application_state = websocket.client_state = websocket.application_state.CONNECTED
    message = {"type": "websocket.send", "text": FRAME}
    connection = SocketConnection(_ASGITransport(websocket, app_send), id="bench")
    connection.start()
    writer = DirectWrites().writer_for(raw_send)
    direct = SocketConnection(_ASGITransport(websocket, app_send), id="direct", direct=writer)
    assert direct.writes_directly
    direct.start()
    out = {
        "uvicorn_send": await timed("uvicorn send", lambda: protocol.send(message), n),
        "starlette_send_text": await timed(
            "+ starlette (hand-written endpoint)", lambda: websocket.send_text(FRAME), n
        ),
        "channels_push": await timed(
            "fastapi_channels push through send", lambda: connection.push(FRAME), n
        ),
        "channels_push_direct": await timed(
            "fastapi_channels push, direct", lambda: direct.push(FRAME), n
        ),
    }
    protocol.connection_lost(None)
    await asyncio.sleep(0)
    return out


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
