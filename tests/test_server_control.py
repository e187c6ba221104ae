"""Server control from Python on every process: sending to all but the sender, and
subscriptions the server makes and ends for a user's connections.

Two real uvicorn processes share one Redis (``tests.multiprocess_app``). A client that must not
receive something is checked by what it receives next: a later message on the same channel
arrives first, so the earlier one never came (a connection sees one process's sends in order).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets

from tests.processes import TIMEOUT, Process, start_process
from tests.redis_support import RedisServer

APP = "tests.multiprocess_app:app"
OURS = "channels-features=reconnect-advice,server-subscriptions"
PRESENCE = {"channels:presence", "channels:join", "channels:leave"}


class Client:
    """A raw websocket client with a timeout on every receive."""

    def __init__(self, ws: websockets.ClientConnection, id: str) -> None:
        self.ws = ws
        self.id = id

    async def receive(self, *, presence: bool = False) -> dict[str, Any]:
        """The next packet; presence events are skipped unless ``presence``."""
        while True:
            async with asyncio.timeout(TIMEOUT):
                packet: dict[str, Any] = json.loads(await self.ws.recv())
            if presence or packet["event"] not in PRESENCE:
                return packet

    async def send(self, packet: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(packet))

    async def subscribe(self, channel: str, since: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"channel": channel}
        if since is not None:
            data["since"] = since
        await self.send({"event": "subscribe-channel-request", "data": data})
        response = await self.receive()
        assert response["event"] == "subscribe-channel-response"
        assert response["data"]["successful"] is True
        return response["data"]


@pytest.fixture(scope="module")
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary)
    server.start()
    yield server
    server.close()


@pytest.fixture
async def processes(redis_server: RedisServer) -> AsyncIterator[tuple[Process, Process]]:
    url = f"{redis_server.url}?prefix=test-{uuid.uuid4().hex[:12]}"
    env = {"FASTAPI_CHANNELS_BROKER_URL": url, "RECONNECT_SPREAD": "0"}
    a, b = await asyncio.gather(*(start_process(APP, env) for _ in range(2)))
    try:
        yield a, b
    finally:
        for process in (a, b):
            process.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Any]:
    """``await connect(process, user, features)`` opens a websocket and waits for ``ready``."""
    opened: list[websockets.ClientConnection] = []

    async def open_client(process: Process, user: str, query: str = OURS) -> Client:
        ws = await websockets.connect(f"ws://127.0.0.1:{process.port}/ws?user={user}&{query}")
        opened.append(ws)
        async with asyncio.timeout(TIMEOUT):
            ready = json.loads(await ws.recv())
        assert ready["event"] == "ready"
        return Client(ws, ready["data"]["id"])

    yield open_client
    for ws in opened:
        await ws.close()


def message(channel: str, data: Any, **extra: Any) -> dict[str, Any]:
    return {"event": "message", "channel": channel, "data": data, **extra}


async def test_a_handler_excluding_the_sender_reaches_every_other_subscriber_on_both_processes(
    processes: tuple[Process, Process], connect: Any
) -> None:
    a, b = processes
    ann, cy = await connect(a, "ann"), await connect(a, "cy")
    bob = await connect(b, "bob")
    for client in (ann, cy, bob):
        await client.subscribe("room:x")

    await ann.send({"event": "say", "channel": "room:x", "data": "one"})
    assert await bob.receive() == message("room:x", "one")  # the other process
    assert await cy.receive() == message("room:x", "one")  # the sender's own process

    await bob.send({"event": "say", "channel": "room:x", "data": "two"})
    assert await ann.receive() == message("room:x", "two")  # "one" never reached its sender
    assert await cy.receive() == message("room:x", "two")
    await cy.send({"event": "say", "channel": "room:x", "data": "three"})
    assert await bob.receive() == message("room:x", "three")  # nor "two" its sender


async def test_an_http_route_excludes_a_connection_held_by_the_other_process(
    processes: tuple[Process, Process], connect: Any
) -> None:
    a, b = processes
    ann, bob = await connect(a, "ann"), await connect(b, "bob")
    await ann.subscribe("room:y")
    await bob.subscribe("room:y")

    assert (await b.post(f"/rooms/y?exclude={ann.id}", {"n": 1})).status_code == 200
    assert (await bob.receive())["data"] == {"n": 1}
    assert (await b.post("/rooms/y", {"n": 2})).status_code == 200
    assert (await ann.receive())["data"] == {"n": 2}
    assert (await bob.receive())["data"] == {"n": 2}


async def test_on_a_history_channel_an_excluding_broadcast_is_stored_once_with_its_position(
    processes: tuple[Process, Process], connect: Any
) -> None:
    a, b = processes
    ann, bob = await connect(a, "ann"), await connect(b, "bob")
    epoch = (await ann.subscribe("lobby:h"))["position"]["epoch"]
    await bob.subscribe("lobby:h")

    await ann.send({"event": "say", "channel": "lobby:h", "data": "one"})
    at = {"offset": 1, "epoch": epoch}
    assert await bob.receive() == message("lobby:h", "one", position=at)
    await bob.send({"event": "say", "channel": "lobby:h", "data": "two"})
    at2 = {"offset": 2, "epoch": epoch}
    assert await ann.receive() == message("lobby:h", "two", position=at2)

    # Stored once each, without the exclusion: a newcomer recovering from 0 gets both.
    cy = await connect(b, "cy")
    response = await cy.subscribe("lobby:h", since={"offset": 0, "epoch": epoch})
    assert response["recovered"] is True
    assert [await cy.receive() for _ in range(2)] == [
        message("lobby:h", "one", position=at),
        message("lobby:h", "two", position=at2),
    ]


async def test_the_server_subscribes_and_unsubscribes_a_users_connections_on_every_process(
    processes: tuple[Process, Process], connect: Any
) -> None:
    a, b = processes
    on_a, on_b = await connect(a, "bob"), await connect(b, "bob")
    envuso = await connect(b, "bob", query="")  # announces nothing, as Envuso's client
    await envuso.subscribe("room:other")

    assert (await a.post("/users/bob/subscribe/room:s")).status_code == 200
    subscribed = {"event": "channels:subscribed", "data": {"channel": "room:s"}}
    assert await on_a.receive() == subscribed
    assert await on_b.receive() == subscribed
    assert (await b.post("/rooms/s", {"n": 1})).status_code == 200
    assert (await on_a.receive())["data"] == {"n": 1}
    assert (await on_b.receive())["data"] == {"n": 1}
    # Envuso's client was left out: neither the event nor the channel's messages reach it.
    assert (await b.post("/rooms/other", {"n": 0})).status_code == 200
    assert await envuso.receive() == message("room:other", {"n": 0})

    assert (await b.post("/users/bob/unsubscribe/room:s")).status_code == 200
    unsubscribed = {"event": "channels:unsubscribed", "data": {"channel": "room:s"}}
    assert await on_a.receive() == unsubscribed
    assert await on_b.receive() == unsubscribed
    await on_a.subscribe("room:other")
    assert (await a.post("/rooms/s", {"n": 2})).status_code == 200
    assert (await a.post("/rooms/other", {"n": 3})).status_code == 200
    assert (await on_a.receive())["data"] == {"n": 3}  # nothing more on room:s


async def test_a_server_subscription_to_a_presence_and_history_channel_catches_up_as_a_request(
    processes: tuple[Process, Process], connect: Any
) -> None:
    a, b = processes
    ann = await connect(a, "ann")
    epoch = (await ann.subscribe("lobby:s"))["position"]["epoch"]
    assert (await a.post("/users/ann/poke")).status_code == 200  # a mark in ann's stream
    assert (await ann.receive(presence=True))["event"] == "channels:presence"
    assert (await ann.receive())["event"] == "poke"
    bob = await connect(b, "bob")

    assert (await a.post("/users/bob/subscribe/lobby:s")).status_code == 200
    assert await bob.receive(presence=True) == {
        "event": "channels:subscribed",
        "data": {"channel": "lobby:s", "position": {"offset": 0, "epoch": epoch}},
    }
    members = await bob.receive(presence=True)
    assert members["data"] == {"channel": "lobby:s", "members": [{"id": "ann"}, {"id": "bob"}]}
    join = await ann.receive(presence=True)
    assert join["data"] == {"channel": "lobby:s", "member": {"id": "bob"}}
    await ann.send({"event": "say", "channel": "lobby:s", "data": "hi"})
    assert await bob.receive() == message("lobby:s", "hi", position={"offset": 1, "epoch": epoch})
