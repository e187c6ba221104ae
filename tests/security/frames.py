"""A hostile client's raw websocket: the handshake, masked frames of any shape, and reading."""

from __future__ import annotations

import asyncio
import base64
import os
import struct

TIMEOUT = 10.0

TEXT, CONT, CLOSE, PING = 0x1, 0x0, 0x8, 0x9


def frame(opcode: int, payload: bytes, *, fin: bool = True, length: int | None = None) -> bytes:
    """A masked client frame; ``length`` announces another payload length than ``payload``'s."""
    size = len(payload) if length is None else length
    head = bytes(((0x80 if fin else 0) | opcode,))
    if size < 126:
        head += bytes((0x80 | size,))
    elif size < 65536:
        head += bytes((0x80 | 126,)) + struct.pack("!H", size)
    else:
        head += bytes((0x80 | 127,)) + struct.pack("!Q", size)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def upgrade_request(address: str, path: str = "/ws") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def connect(
    address: str, path: str = "/ws"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a websocket by hand; returns once the server answered 101."""
    host, port = address.split(":")
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(upgrade_request(address, path))
        response = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in response, response
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One server frame (unmasked): its opcode and payload."""
    async with asyncio.timeout(TIMEOUT):
        first, second = await reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await reader.readexactly(8))
        return first & 0x0F, await reader.readexactly(size)


async def close_code(reader: asyncio.StreamReader) -> int:
    """Read frames until the server's close frame; its code."""
    while True:
        opcode, payload = await read_frame(reader)
        if opcode == CLOSE:
            code: int = struct.unpack("!H", payload[:2])[0]
            return code


async def send_ignoring_reset(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write ``data``; a server that already closed (reset) the connection is not an error."""
    try:
        writer.write(data)
        async with asyncio.timeout(TIMEOUT):
            await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass
