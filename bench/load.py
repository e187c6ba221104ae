"""The load process: many websocket clients on uvloop, steered by the driver through a pipe.

Clients use the ``websockets`` library. Each speaks its server's way in: fastapi_channels
(JWT as the subprotocol, ``ready``, subscribe request and response, optionally the batching
option), the hand-written endpoint (a plain connect) and Socket.IO (Engine.IO v4 over a
websocket, JWT in the namespace ``auth``, a ``join`` event with an acknowledgement). Every
delivery carries its publish time, so latency is publish-to-receive on one clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from multiprocessing.connection import Connection
from typing import Any

import jwt
import uvloop
from websockets.asyncio.client import ClientConnection, connect

from bench.common import JWT_ALGORITHM, JWT_SECRET, ROOM

CHANNELS, HANDWRITTEN, HANDWRITTEN_JWT, SOCKETIO = (
    "channels",
    "handwritten",
    "handwritten-jwt",
    "socketio",
)
_MARK = '"t":'


def token(index: int) -> str:
    return jwt.encode({"sub": f"user{index}", "id": index}, JWT_SECRET, algorithm=JWT_ALGORITHM)


class Load:
    def __init__(self) -> None:
        self.sockets: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.received = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.latency = False
        self.latencies: list[float] = []
        self.first_t: float | None = None
        self.last_receive = 0.0
        self.frames = 0

    # ------------------------------------------------------------------ connecting

    async def _open(self, kind: str, url: str, index: int, batch: bool) -> ClientConnection:
        options: dict[str, Any] = {
            "compression": None,
            "ping_interval": None,
            "open_timeout": 60,
            "close_timeout": 2,
            "max_size": None,
        }
        if kind in (CHANNELS, HANDWRITTEN_JWT):
            path = "/ws" if kind == CHANNELS else "/ws-jwt"
            ws = await connect(f"{url}{path}", subprotocols=[token(index)], **options)  # type: ignore[list-item]
            ready = json.loads(await ws.recv())
            assert ready["event"] == "ready", ready
            if batch:
                await ws.send(json.dumps({"event": "channels:batch", "data": {"enabled": True}}))
                answer = json.loads(await ws.recv())
                assert answer["event"] == "channels:batch" and answer["data"]["enabled"], answer
            await ws.send(
                json.dumps({"event": "subscribe-channel-request", "data": {"channel": ROOM}})
            )
            response = json.loads(await ws.recv())
            assert kind == HANDWRITTEN_JWT or response["data"]["successful"], response
        elif kind == SOCKETIO:
            ws = await connect(f"{url}/socket.io/?EIO=4&transport=websocket", **options)
            opened = await ws.recv()
            assert isinstance(opened, str) and opened.startswith("0"), opened
            await ws.send("40" + json.dumps({"token": token(index)}))
            connected = await ws.recv()
            assert isinstance(connected, str) and connected.startswith("40"), connected
            await ws.send("421" + json.dumps(["join", ROOM]))
            ack = await ws.recv()
            assert ack == "431[true]", ack
        else:
            ws = await connect(f"{url}/ws", **options)
        return ws

    async def connect(
        self, kind: str, url: str, count: int, first: int, concurrency: int, batch: bool
    ) -> dict[str, Any]:
        gate = asyncio.Semaphore(concurrency)
        errors: list[str] = []

        async def one(index: int) -> None:
            async with gate:
                try:
                    ws = await self._open(kind, url, index, batch)
                except Exception as exc:
                    errors.append(repr(exc))
                    return
            self.sockets.append(ws)
            self.readers.append(asyncio.create_task(self._read(ws, kind)))

        start = time.monotonic()
        await asyncio.gather(*(one(first + n) for n in range(count)))
        elapsed = time.monotonic() - start
        return {"ok": count - len(errors), "errors": errors[:5], "elapsed": elapsed}

    # ------------------------------------------------------------------ receiving

    async def _read(self, ws: ClientConnection, kind: str) -> None:
        monotonic = time.monotonic
        try:
            async for message in ws:
                if not isinstance(message, str):
                    continue
                if kind == SOCKETIO and message == "2":
                    await ws.send("3")
                    continue
                at = message.find(_MARK)
                if at < 0:
                    continue
                now = monotonic()
                count = 0
                while at >= 0:
                    count += 1
                    if self.latency or self.first_t is None:
                        end = message.find(",", at)
                        sent = float(message[at + 4 : end])
                        if self.first_t is None:
                            self.first_t = sent
                        if self.latency:
                            self.latencies.append(now - sent)
                    at = message.find(_MARK, at + 4)
                self.frames += 1
                self.received += count
                self.last_receive = now
                if self.received >= self.target:
                    self.reached.set()
        except Exception:
            pass

    def reset(self, latency: bool) -> dict[str, Any]:
        self.received = 0
        self.frames = 0
        self.latency = latency
        self.latencies = []
        self.first_t = None
        self.last_receive = 0.0
        self.target = 1 << 62  # until wait() names the real one
        self.reached.clear()
        return {"sockets": len(self.sockets)}

    async def wait(self, expected: int, timeout: float) -> dict[str, Any]:
        self.target = expected
        if self.received >= expected:
            self.reached.set()
        try:
            async with asyncio.timeout(timeout):
                await self.reached.wait()
        except TimeoutError:
            pass
        return {
            "received": self.received,
            "frames": self.frames,
            "latencies": self.latencies,
            "first_t": self.first_t,
            "last_receive": self.last_receive,
        }

    async def close(self) -> dict[str, Any]:
        count = len(self.sockets)
        for task in self.readers:
            task.cancel()
        for ws in self.sockets:
            ws.transport.abort()
        self.sockets, self.readers = [], []
        await asyncio.sleep(0)
        return {"closed": count}


async def serve(pipe: Connection) -> None:
    load = Load()
    loop = asyncio.get_running_loop()
    while True:
        command: dict[str, Any] = await loop.run_in_executor(None, pipe.recv)
        op = command.pop("op")
        if op == "exit":
            await load.close()
            pipe.send({})
            return
        if op == "connect":
            result = await load.connect(**command)
        elif op == "reset":
            result = load.reset(**command)
        elif op == "wait":
            result = await load.wait(**command)
        elif op == "close":
            result = await load.close()
        else:
            result = {"error": f"unknown op {op}"}
        pipe.send(result)


def main(pipe: Connection, cpus: set[int] | None) -> None:
    """Entry point of a load process (started by the driver with ``multiprocessing``)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    uvloop.run(serve(pipe))
