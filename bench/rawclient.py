"""A websocket client as one small `asyncio.Protocol`: for runs with 100,000 connections.

``bench.load``'s clients use the ``websockets`` library: a connection object, its buffers and a
reader task each, tens of kilobytes per socket, so two load processes would need gigabytes and
most of their CPU for 100,000 idle sockets. This one keeps a protocol object and a few
attributes per socket and no task: it speaks fastapi_channels' handshake (JWT as the
subprotocol, ``ready``, one subscribe request and its answer), then hands every text frame to
the load's ``deliveries`` (which counts and times them as for the other clients), answers
pings, and ignores the rest. Frames it sends are masked, as RFC 6455 requires of a client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import Callable
from typing import Any, Final

from bench.common import ROOM

__all__ = ["RawClient", "client_frame"]

_TEXT: Final = 0x1
_CLOSE: Final = 0x8
_PING: Final = 0x9
_PONG: Final = 0xA
_SUBSCRIBE: Final = json.dumps(
    {"event": "subscribe-channel-request", "data": {"channel": ROOM}}
).encode()


def client_frame(opcode: int, data: bytes) -> bytes:
    """One final, masked frame (a client's)."""
    mask = os.urandom(4)
    size = len(data)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return header + mask + masked


class RawClient(asyncio.Protocol):
    """One subscribed connection; ``subscribed`` resolves once the server confirmed it.

    Args:
        path: the request path with the host (``host:port``), e.g. for the ``Host`` header.
        token: the JWT sent as the subprotocol.
        deliveries: called with each text frame after the subscription and its arrival time
            (``time.monotonic()`` when its bytes were read).
    """

    __slots__ = ("_buffer", "_deliveries", "_host", "_stage", "_token", "subscribed", "transport")

    def __init__(self, host: str, token: str, deliveries: Callable[[bytes, float], bool]) -> None:
        self._host = host
        self._token = token
        self._deliveries = deliveries
        self._buffer = b""
        self._stage = 0  # 0 upgrade, 1 ready, 2 subscribe answer, 3 subscribed
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transport is no `asyncio.Transport` subclass
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {self._token}\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(f"closed before subscribing: {exc}"))

    def data_received(self, data: bytes) -> None:
        arrived = time.monotonic()
        buffer = self._buffer + data if self._buffer else data
        if self._stage == 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self._fail(f"refused: {buffer[:80]!r}")
                return
            buffer = buffer[end + 4 :]
            self._stage = 1
        at, size = 0, len(buffer)
        while size - at >= 2:
            first, second = buffer[at], buffer[at + 1] & 0x7F
            start = at + 2
            if second == 126:
                if size - at < 4:
                    break
                second = int.from_bytes(buffer[at + 2 : at + 4], "big")
                start = at + 4
            elif second == 127:
                if size - at < 10:
                    break
                second = int.from_bytes(buffer[at + 2 : at + 10], "big")
                start = at + 10
            end = start + second
            if end > size:
                break
            self._frame(first & 0x0F, buffer[start:end], arrived)
            at = end
        self._buffer = buffer[at:]

    def _frame(self, opcode: int, payload: bytes, arrived: float) -> None:
        transport = self.transport
        assert transport is not None
        if opcode == _TEXT:
            if self._stage == 3:
                self._deliveries(payload, arrived)
            elif self._stage == 1:  # ready
                self._stage = 2
                transport.write(client_frame(_TEXT, _SUBSCRIBE))
            elif b"subscribe-channel-response" in payload:
                if b'"successful":true' not in payload:
                    self._fail(f"subscription refused: {payload[:120]!r}")
                    return
                self._stage = 3
                if not self.subscribed.done():
                    self.subscribed.set_result(None)
        elif opcode == _PING:
            transport.write(client_frame(_PONG, payload))
        elif opcode == _CLOSE:
            transport.close()

    def _fail(self, why: str) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()
