"""The load process: many websocket clients on uvloop, steered by the driver through a pipe.

Clients use the ``websockets`` library. Each speaks its server's way in: fastapi_channels
(JWT as the subprotocol, ``ready``, subscribe request and response, optionally the batching
option), the hand-written endpoint (a plain connect) and Socket.IO (Engine.IO v4 over a
websocket, JWT in the namespace ``auth``, a ``join`` event with an acknowledgement). Every
delivery carries its publish time, so latency is publish-to-receive on one clock, taken when a
socket's bytes reach its client (see `TimedConnection`).
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
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from bench.common import JWT_ALGORITHM, JWT_SECRET, ROOM, raise_open_files
from bench.rawclient import RawClient

CHANNELS, HANDWRITTEN, HANDWRITTEN_JWT, SOCKETIO, RAW = (
    "channels",
    "handwritten",
    "handwritten-jwt",
    "socketio",
    "channels-raw",  # fastapi_channels through `bench.rawclient`: light, for 100,000 sockets
)
_MARK = b'"t":'


class TimedConnection(ClientConnection):
    """A client connection that counts and times deliveries as its frames are parsed.

    Through the library's reader (``async for message in ws``) every delivery would also be
    queued, wake its socket's task and wait for that task's turn: at 500 subscribers most of a
    broadcast's p99 would be the client's own work on the other 499 sockets, and the faster a
    server writes, the more of them are ready at once. Here a delivery's time is taken when its
    socket's bytes reach the client (before they are parsed), and the frame is counted as soon
    as the ``websockets`` protocol has parsed it; nothing else is done per delivery. Frames
    without a publish time (answers, Engine.IO pings) still go to the reader.
    """

    load: Load | None = None
    arrived = 0.0

    def data_received(self, data: bytes) -> None:
        self.arrived = time.monotonic()
        super().data_received(data)

    def process_event(self, event: Event) -> None:
        load = self.load
        if load is not None and isinstance(event, Frame) and event.opcode is Opcode.TEXT:
            data = event.data if isinstance(event.data, bytes) else bytes(event.data)
            if load.deliveries(data, self.arrived):
                return
        super().process_event(event)


def token(index: int) -> str:
    return jwt.encode({"sub": f"user{index}", "id": index}, JWT_SECRET, algorithm=JWT_ALGORITHM)


class Load:
    def __init__(self) -> None:
        self.sockets: list[ClientConnection | RawClient] = []
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
            "create_connection": TimedConnection,
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
        assert isinstance(ws, TimedConnection)
        ws.load = self
        return ws

    async def _open_raw(self, url: str, index: int, source: str | None) -> RawClient:
        """A `RawClient`, subscribed; from the loopback address ``source`` when given."""
        host, port = url.removeprefix("ws://").rsplit(":", 1)
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: RawClient(f"{host}:{port}", token(index), self.deliveries),
            host,
            int(port),
            local_addr=(source, 0) if source else None,
        )
        async with asyncio.timeout(60):
            await client.subscribed
        return client

    async def connect(
        self,
        kind: str,
        url: str,
        count: int,
        first: int,
        concurrency: int,
        batch: bool,
        sources: list[str] | None = None,
    ) -> dict[str, Any]:
        """Open ``count`` clients, ``concurrency`` at a time; raw ones spread over ``sources``."""
        gate = asyncio.Semaphore(concurrency)
        errors: list[str] = []

        async def one(index: int) -> None:
            async with gate:
                try:
                    if kind == RAW:
                        source = sources[index % len(sources)] if sources else None
                        self.sockets.append(await self._open_raw(url, index, source))
                        return
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

    def deliveries(self, frame: bytes, arrived: float) -> bool:
        """Count (and time) the deliveries in one text frame; False if it holds none."""
        at = frame.find(_MARK)
        if at < 0:
            return False
        count = 0
        while at >= 0:
            count += 1
            if self.latency or self.first_t is None:
                sent = float(frame[at + 4 : frame.find(b",", at)])
                if self.first_t is None:
                    self.first_t = sent
                if self.latency:
                    self.latencies.append(arrived - sent)
            at = frame.find(_MARK, at + 4)
        self.frames += 1
        self.received += count
        self.last_receive = arrived
        if self.received >= self.target:
            self.reached.set()
        return True

    async def _read(self, ws: ClientConnection, kind: str) -> None:
        """What is not a delivery: Engine.IO pings are answered, the rest is dropped."""
        try:
            async for message in ws:
                if kind == SOCKETIO and message == "2":
                    await ws.send("3")
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
            if ws.transport is not None:
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
    raise_open_files()
    uvloop.run(serve(pipe))
