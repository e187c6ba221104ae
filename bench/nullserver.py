"""A server that does almost nothing, to measure the load client's own ceiling.

It accepts websocket upgrades with a minimal handshake and, on ``/bench/publish``, writes one
pre-built frame per broadcast to every socket with ``transport.write``: a delivery costs it a
fraction of a microsecond, so whatever rate the clients reach against it is their limit. It
answers the same control routes as the real apps. Run: ``python -m bench.nullserver FD``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psutil
import uvloop

from bench.common import EVENT, LagProbe, payload

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def text_frame(text: str) -> bytes:
    data = text.encode()
    size = len(data)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + data


class NullServer:
    def __init__(self) -> None:
        self.sockets: set[asyncio.Transport] = set()
        self.probe = LagProbe()
        self.done = True
        self.published = 0
        self.process = psutil.Process(os.getpid())

    async def publish(self, rate: float, count: int, burst: int) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.published = 0
        for seq in range(count):
            if rate > 0:
                delay = start + seq / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            frame = text_frame(json.dumps({"event": EVENT, "data": payload(seq)}))
            for transport in self.sockets:
                transport.write(frame)
            self.published += 1
            if rate <= 0 and (seq + 1) % burst == 0:
                await asyncio.sleep(0)
        self.done = True

    def control(self, target: str) -> dict[str, Any]:
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/bench/publish":
            self.done = False
            asyncio.get_running_loop().create_task(
                self.publish(
                    float(query["rate"]), int(query["count"]), int(query.get("burst", "1"))
                )
            )
            return {"started": True}
        reset = query.get("reset") in ("1", "true")
        return {
            "pid": os.getpid(),
            "rss": self.process.memory_info().rss,
            "subscribers": len(self.sockets),
            "lag_max": self.probe.reset() if reset else self.probe.max_lag,
            "gc_max": self.probe.reset_gc() if reset else self.probe.max_gc,
            "publish_done": self.done,
            "published": self.published,
            "publish_error": None,
        }


class _Protocol(asyncio.Protocol):
    def __init__(self, server: NullServer) -> None:
        self.server = server
        self.buffer = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            return  # client frames are ignored
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        head = self.buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        target = head[0].split(" ")[1]
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:])}
        assert self.transport is not None
        if "sec-websocket-key" not in headers:
            body = json.dumps(self.server.control(target)).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()
            return
        accept = base64.b64encode(
            hashlib.sha1(headers["sec-websocket-key"].encode() + _GUID).digest()
        )
        extra = b""
        if "sec-websocket-protocol" in headers:
            chosen = headers["sec-websocket-protocol"].split(",")[0].strip()
            extra = b"Sec-WebSocket-Protocol: " + chosen.encode() + b"\r\n"
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n"
        )
        self.upgraded = True
        self.server.sockets.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server.sockets.discard(self.transport)


async def serve(fd: int) -> None:
    server = NullServer()
    server.probe.start()
    sock = socket.socket(fileno=fd)
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: _Protocol(server), sock=sock, backlog=4096)
    print("ready", flush=True)
    await asyncio.Event().wait()  # until the driver terminates the process


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(int(sys.argv[1])))
