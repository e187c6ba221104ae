"""Faults against a real uvicorn server: a client that never reads, a reconnect storm, abrupt
drops and clients that vanish; afterwards all state and every connection object are gone."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import socket
import struct
import time
import weakref
from typing import Any

import pytest
import websockets
from fastapi import FastAPI

from fastapi_channels import (
    ChannelListener,
    Channels,
    Limits,
    SocketConnection,
    channel,
)
from fastapi_channels.core.connection import SocketConnection as ConnectionClass
from tests.conftest import user_from_query
from tests.live import live_server


@channel("room")
class Room(ChannelListener):
    pass


def build(**limits: Any) -> tuple[Channels, FastAPI]:
    channels = Channels(user=user_from_query, listeners=[Room], limits=Limits(**limits))
    app = FastAPI()
    app.include_router(channels.router)
    return channels, app


SUBSCRIBE = json.dumps({"event": "subscribe-channel-request", "data": {"channel": "room"}})


async def subscriber(url: str) -> websockets.ClientConnection:
    ws = await websockets.connect(url, max_queue=None)
    await ws.recv()
    await ws.send(SUBSCRIBE)
    await ws.recv()
    return ws


def stalled_peer(
    address: str, subscribe: bool = True, small_buffer: bool = True, path: str = "/ws"
) -> socket.socket:
    """A websocket client that completes the handshake, subscribes, reads the answer, and
    never reads again. Blocking: run it in a thread."""
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)))
    if small_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response
    if not subscribe:
        return sock
    payload = SUBSCRIBE.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    received = b""
    while b"subscribe-channel-response" not in received:
        received += sock.recv(4096)
    return sock


def removal_of(channels: Channels, watched: SocketConnection) -> asyncio.Event:
    """An event set once the server has forgotten ``watched`` (its reader ended)."""
    removed = asyncio.Event()
    remove = channels.server.remove_connection

    async def spy(connection: SocketConnection) -> None:
        await remove(connection)
        if connection is watched:
            removed.set()

    channels.server.remove_connection = spy  # type: ignore[method-assign]
    return removed


async def latencies(channels: Channels, clients: list[Any], rounds: int) -> tuple[float, float]:
    """Broadcast ``rounds`` timestamped messages; the median and p99 publish-to-receive latency.

    Server and clients share this process: a moment without the CPU (another process on a
    busy machine) delays a round for everyone and shows in the p99, while a peer that slowed
    the fan-out would delay every round, and so the median."""
    measured: list[float] = []

    async def drain(ws: websockets.ClientConnection) -> None:
        for _ in range(rounds):
            packet = json.loads(await ws.recv())
            measured.append(time.perf_counter() - packet["data"]["t"])

    readers = [asyncio.ensure_future(drain(ws)) for ws in clients]
    for _ in range(rounds):
        await channels.server.broadcast(Room, "room", "tick", {"t": time.perf_counter()})
        await asyncio.sleep(0.02)  # the fixed publish rate under test: 50 broadcasts/s
    async with asyncio.timeout(30):
        await asyncio.gather(*readers)
    measured.sort()
    return measured[len(measured) // 2], measured[int(len(measured) * 0.99)]


async def test_a_client_that_never_reads_does_not_slow_the_others() -> None:
    channels, app = build(queue_size=200, close_timeout=0.5)
    async with live_server(app) as address:
        url = f"ws://{address}/ws"
        clients = await asyncio.gather(*(subscriber(url) for _ in range(500)))
        baseline, baseline_p99 = await latencies(channels, clients, rounds=20)
        before = set(channels.server.connections)
        async with asyncio.timeout(5):
            stalled_socket = await asyncio.to_thread(stalled_peer, address)
        (stalled,) = set(channels.server.connections) - before
        removed = removal_of(channels, stalled)
        try:
            # Fill the stalled peer's socket buffers until its writer is stuck.
            big = "x" * 65_536
            for _ in range(2_000):
                if stalled.queued >= 100:
                    break
                await stalled.send("fill", big)
                await asyncio.sleep(0)
            assert stalled.queued >= 100, "the peer's buffers never filled"
            with_stalled, stalled_p99 = await latencies(channels, clients, rounds=20)
            # Keep sending until the overflow policy disconnects it; it is then dropped.
            for _ in range(400):
                if not stalled.is_open:
                    break
                await channels.server.broadcast(Room, "room", "tick", {"t": 0})
            assert not stalled.is_open
            async with asyncio.timeout(5):
                await removed.wait()
            assert channels.server.stats.closes[1013] == 1
            assert len(channels.server.subscribers("room")) == 500
        finally:
            stalled_socket.close()
            await asyncio.gather(*(ws.close() for ws in clients))
        print(f"median and p99 without the stalled peer {baseline:.4f} s, {baseline_p99:.4f} s;")
        print(f"with it {with_stalled:.4f} s, {stalled_p99:.4f} s")
        assert with_stalled <= max(2 * baseline, baseline + 0.005), (baseline, with_stalled)


def abrupt_drop(address: str, half_frame: bool) -> None:
    """Open a websocket, then reset the TCP connection (optionally mid-frame)."""
    sock = stalled_peer(address, subscribe=False)
    if half_frame:
        sock.sendall(struct.pack("!BB", 0x81, 0x80 | 100) + os.urandom(4) + b'{"ev')
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_storm_drops_and_vanishing_clients_leave_nothing_behind() -> None:
    channels, app = build(max_connections_per_user=None)
    live: weakref.WeakSet[SocketConnection] = weakref.WeakSet()
    original_init = ConnectionClass.__init__

    def tracking_init(self: SocketConnection, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        live.add(self)

    ConnectionClass.__init__ = tracking_init  # type: ignore[method-assign]
    try:
        async with live_server(app) as address:
            url = f"ws://{address}/ws"
            tasks_before = len(asyncio.all_tasks())
            storm = await asyncio.gather(
                *(subscriber(f"{url}?user=u{n % 50}") for n in range(1000))
            )
            assert len(channels.server) == 1000
            assert channels.server.channel_counts() == {"room": 1000}
            for n in range(20):
                await asyncio.to_thread(abrupt_drop, address, half_frame=n % 2 == 0)
            for ws in storm[:500]:
                ws.transport.abort()  # vanish without a close frame
            await asyncio.gather(*(ws.close() for ws in storm[500:]))
            async with asyncio.timeout(20):
                await channels.server.wait_empty()
            assert channels.server.channel_counts() == {}
            assert channels.server.connections_of("u1") == []
            assert channels.server.broker.topics == frozenset()
            del storm
            gc.collect()
            assert len(live) == 0, "connection objects are still referenced"
            assert len(asyncio.all_tasks()) <= tasks_before
    finally:
        ConnectionClass.__init__ = original_init  # type: ignore[method-assign]


handled: list[str] = []
handler_started = asyncio.Event()
release_handler = asyncio.Event()


@channel("work")
class Work(ChannelListener):
    @channel.on("job")
    async def job(self, connection: SocketConnection, user: Any, packet: Any) -> None:
        handler_started.set()
        await release_handler.wait()  # in flight until the test has seen the shutdown begin
        handled.append(packet.data)


async def test_uvicorn_shutdown_lets_handlers_finish_and_closes_with_1012() -> None:
    handled.clear()
    handler_started.clear()
    release_handler.clear()
    channels = Channels(listeners=[Work])
    app = FastAPI()
    app.include_router(channels.router)
    server = live_server(app)
    address = await server.__aenter__()
    # A client that follows reconnect advice (ours) is closed at once, with the advice.
    ws = await websockets.connect(f"ws://{address}/ws?channels-features=reconnect-advice")
    await ws.recv()
    await ws.send(SUBSCRIBE.replace('"room"', '"work"'))
    await ws.recv()
    await ws.send(json.dumps({"event": "job", "channel": "work", "data": "payroll"}))
    async with asyncio.timeout(2):
        await handler_started.wait()
    stopping = asyncio.ensure_future(server.__aexit__(None, None, None))
    received = []
    async with asyncio.timeout(5):
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                received.append(json.loads(await ws.recv()))
    assert ws.close_code == 1012  # the client is told while the handler is still running
    assert received[-1]["event"] == "disconnect"
    assert 0 <= received[-1]["data"]["reconnect_after"] <= 10
    assert handled == [] and not stopping.done()
    release_handler.set()
    async with asyncio.timeout(5):
        await stopping  # uvicorn waited for the handler before it finished stopping
    assert handled == ["payroll"]
    assert channels.server.connections == []


@channel("risky")
class Risky(ChannelListener):
    @channel.on("crash")
    async def crash(self, connection: SocketConnection, user: Any, packet: Any) -> None:
        raise RuntimeError("handler bug")

    @channel.on("hang")
    async def hang(self, connection: SocketConnection, user: Any, packet: Any) -> None:
        await asyncio.Event().wait()

    @channel.on("say")
    async def say(self, connection: SocketConnection, user: Any, packet: Any) -> None:
        await self.broadcast("risky", "said", packet.data)


async def test_a_handler_that_raises_or_hangs_fails_only_that_request_over_the_wire() -> None:
    channels = Channels(listeners=[Risky], limits=Limits(handler_timeout=0.3))
    app = FastAPI()
    app.include_router(channels.router)
    subscribe = SUBSCRIBE.replace('"room"', '"risky"')
    async with (
        live_server(app) as address,
        websockets.connect(f"ws://{address}/ws") as faulty,
        websockets.connect(f"ws://{address}/ws") as bystander,
    ):
        for ws in (faulty, bystander):
            await ws.recv()
            await ws.send(subscribe)
            await ws.recv()
        for event, code in (("crash", "handler-error"), ("hang", "handler-timeout")):
            await faulty.send(json.dumps({"event": event, "channel": "risky"}))
            await bystander.send(json.dumps({"event": "say", "channel": "risky", "data": event}))
            assert json.loads(await bystander.recv())["data"] == event
            # the faulty connection gets the bystander's message and its own error, in order
            packets = [json.loads(await faulty.recv()) for _ in range(2)]
            errors = [p["data"]["code"] for p in packets if p["event"] == "channels:error"]
            assert errors == [code]
        await faulty.send(json.dumps({"event": "say", "channel": "risky", "data": "still here"}))
        for ws in (faulty, bystander):
            assert json.loads(await ws.recv())["data"] == "still here"


def closed_by_server(sock: socket.socket, limit: int = 64 * 1024 * 1024) -> bool:
    """Read ``sock`` to its end (a FIN or a reset); False if ``limit`` bytes come first.
    Blocking, with the socket's own timeout: run it in a thread."""
    read = 0
    try:
        while read < limit:
            chunk = sock.recv(65_536)
            if not chunk:
                return True
            read += len(chunk)
    except ConnectionResetError:
        return True
    return False


async def test_a_peer_that_never_reads_is_aborted_and_counted_until_its_socket_is_gone() -> None:
    channels, app = build(queue_size=50, close_timeout=0.3, max_connections_per_user=1)
    async with live_server(app) as address:
        async with asyncio.timeout(5):
            stalled_socket = await asyncio.to_thread(stalled_peer, address, path="/ws?user=ann")
        try:
            (stalled,) = channels.server.connections
            gone = removal_of(channels, stalled)
            big = "x" * 65_536
            for _ in range(2_000):  # fill the socket's buffers, then the queue: 1013
                if not stalled.is_open:
                    break
                await channels.server.broadcast(Room, "room", "fill", big)
                await asyncio.sleep(0)
            assert not stalled.is_open
            # Closing but not gone: ann's one allowed connection is still taken.
            async with websockets.connect(f"ws://{address}/ws?user=ann") as refused:
                assert json.loads(await refused.recv())["data"]["reason"] == "too many connections"
            # After close_timeout the server drops the socket itself, and only then forgets it.
            async with asyncio.timeout(10):
                await gone.wait()
            stalled_socket.settimeout(10)
            assert await asyncio.to_thread(closed_by_server, stalled_socket)
            assert channels.server.count_of("ann") == 0
            async with websockets.connect(f"ws://{address}/ws?user=ann") as again:
                assert json.loads(await again.recv())["event"] == "ready"
        finally:
            stalled_socket.close()
