"""Two real uvicorn processes on one broker: what one process sends reaches the other's clients.

Each process is a subprocess serving ``tests.multiprocess_app`` on its own loopback port, with
the broker URL of a private Redis or NATS server that the restart tests restart, and on the
session's Redis Cluster (``redis-cluster``; its shard restarts are
`tests/test_redis_cluster.py`'s).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import websockets

from tests.nats_support import NatsServer
from tests.processes import TIMEOUT, Process, start_process
from tests.redis_cluster import ClusterGroup
from tests.redis_support import RedisServer

APP = "tests.multiprocess_app:app"
PRESENCE_TIMEOUT = 1.0


@dataclass
class Cluster:
    server: RedisServer | NatsServer | ClusterGroup
    name: str
    """What the broker calls its server in its logs: ``"Redis"`` or ``"NATS"``."""
    a: Process
    b: Process


@pytest.fixture(scope="module")
def redis_for_processes(redis_binary: str) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def nats_for_processes(nats_server_binary: str) -> Iterator[NatsServer]:
    server = NatsServer(nats_server_binary)
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["redis", "nats", "redis-cluster"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    env = {"PRESENCE_TIMEOUT": str(PRESENCE_TIMEOUT)}
    server: RedisServer | NatsServer | ClusterGroup
    if request.param == "redis":
        server, name = request.getfixturevalue("redis_for_processes"), "Redis"
    elif request.param == "redis-cluster":
        server, name = request.getfixturevalue("redis_cluster"), "Redis"
    else:
        server, name = request.getfixturevalue("nats_for_processes"), "NATS"
    env["FASTAPI_CHANNELS_BROKER_URL"] = f"{server.url}?prefix=test-{uuid.uuid4().hex[:12]}"
    a, b = await asyncio.gather(*(start_process(APP, env) for _ in range(2)))
    try:
        yield Cluster(server, name, a, b)
    finally:
        for process in (a, b):
            process.stop()


class Client:
    """A websocket client (the ``websockets`` library) with a timeout on every receive."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            frame = await self.ws.recv()
        packet: dict[str, Any] = json.loads(frame)
        return packet

    async def subscribe(self, channel: str) -> None:
        request = {"event": "subscribe-channel-request", "data": {"channel": channel}}
        await self.ws.send(json.dumps(request))
        assert await self.receive() == {
            "event": "subscribe-channel-response",
            "data": {"channel": channel, "successful": True},
        }

    async def subscribe_to_lobby(
        self, channel: str, since: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], list[Any]]:
        """Subscribe to a presence and history channel: its response, then its members."""
        data: dict[str, Any] = {"channel": channel}
        if since is not None:
            data["since"] = since
        await self.ws.send(json.dumps({"event": "subscribe-channel-request", "data": data}))
        response = await self.receive()
        assert response["event"] == "subscribe-channel-response"
        members = await self.receive()
        assert members["event"] == "channels:presence"
        return response["data"], members["data"]["members"]


@pytest.fixture
async def connect() -> AsyncIterator[Any]:
    """``await connect(process, user)`` opens a websocket and waits for ``ready``."""
    opened: list[websockets.ClientConnection] = []

    async def open_client(process: Process, user: str) -> Client:
        ws = await websockets.connect(f"ws://127.0.0.1:{process.port}/ws?user={user}")
        opened.append(ws)
        client = Client(ws)
        assert (await client.receive())["event"] == "ready"
        return client

    yield open_client
    for ws in opened:
        await ws.close()


async def test_a_broadcast_from_an_http_route_reaches_the_other_process(
    cluster: Cluster, connect: Any
) -> None:
    bob = await connect(cluster.b, "bob")
    await bob.subscribe("room:1")
    response = await cluster.a.post("/rooms/1", {"text": "hello"})
    assert response.status_code == 200
    assert await bob.receive() == {
        "event": "message",
        "channel": "room:1",
        "data": {"text": "hello"},
    }


async def test_a_user_is_reached_and_disconnected_from_the_other_process(
    cluster: Cluster, connect: Any
) -> None:
    bob = await connect(cluster.b, "bob")
    assert (await cluster.a.post("/users/bob/poke")).status_code == 200
    assert await bob.receive() == {"event": "poke", "data": {"from": "http"}}

    assert (await cluster.a.post("/users/bob/disconnect")).status_code == 200
    assert await bob.receive() == {"event": "disconnect", "data": {"reason": "bye"}}
    with pytest.raises(websockets.ConnectionClosedOK):
        await bob.receive()
    assert bob.ws.close_code == 1000


@pytest.mark.parametrize("cluster", ["redis", "nats"], indirect=True)  # one server to restart
async def test_processes_survive_a_restart_of_their_server(cluster: Cluster, connect: Any) -> None:
    ann = await connect(cluster.a, "ann")
    bob = await connect(cluster.b, "bob")
    await ann.subscribe("room:r")
    await bob.subscribe("room:r")

    marks = cluster.a.mark(), cluster.b.mark()
    assert not isinstance(cluster.server, ClusterGroup)
    cluster.server.stop()
    await asyncio.gather(
        cluster.a.wait_health(False, marks[0], cluster.name),
        cluster.b.wait_health(False, marks[1], cluster.name),
    )

    # The server is down: process A still serves its own subscribers, and says the rest was lost.
    response = await cluster.a.post("/rooms/r", {"n": "during"})
    assert response.status_code == 503
    assert "this process's subscribers only" in response.json()["detail"]
    assert (await ann.receive())["data"] == {"n": "during"}

    marks = cluster.a.mark(), cluster.b.mark()
    cluster.server.start()
    await asyncio.gather(
        cluster.a.wait_health(True, marks[0], cluster.name),
        cluster.b.wait_health(True, marks[1], cluster.name),
    )

    # Back: cross-process delivery resumes by itself, on the same websocket connections.
    assert (await cluster.a.post("/rooms/r", {"n": "after"})).status_code == 200
    assert (await ann.receive())["data"] == {"n": "after"}
    assert (await bob.receive())["data"] == {"n": "after"}  # "during" never reached B
    assert (await cluster.a.post("/users/bob/poke")).status_code == 200
    assert (await bob.receive())["event"] == "poke"


async def test_a_killed_process_leaves_no_ghost_and_a_restarted_one_recovers_positions(
    cluster: Cluster, connect: Any
) -> None:
    ann = await connect(cluster.a, "ann")
    bob = await connect(cluster.b, "bob")
    await ann.subscribe_to_lobby("lobby:1")
    response, members = await bob.subscribe_to_lobby("lobby:1")
    assert members == [{"id": "ann"}, {"id": "bob"}]
    epoch = response["position"]["epoch"]

    # Process A dies without a word: its member goes within the presence timeout's bound.
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    cluster.a.kill()
    leave = await bob.receive()
    assert leave == {
        "event": "channels:leave",
        "data": {"channel": "lobby:1", "member": {"id": "ann"}},
    }
    assert loop.time() - killed_at <= PRESENCE_TIMEOUT * 4 / 3 + 1.0  # the bound, and slack

    # History written through process B survives B's restart: bob comes back and recovers.
    assert (await cluster.b.post("/lobbies/1", {"n": 1})).status_code == 200
    first = await bob.receive()
    assert first["position"] == {"offset": 1, "epoch": epoch}
    cluster.b.stop()
    restarted = await start_process(APP, cluster.b.env)
    try:
        assert (await restarted.post("/lobbies/1", {"n": 2})).status_code == 200
        assert (await restarted.post("/lobbies/1", {"n": 3})).status_code == 200
        bob = await connect(restarted, "bob")
        response, members = await bob.subscribe_to_lobby("lobby:1", since=first["position"])
        assert response["recovered"] is True
        assert members == [{"id": "bob"}]
        missed = [await bob.receive() for _ in range(2)]
        assert [(m["data"], m["position"]["offset"]) for m in missed] == [
            ({"n": 2}, 2),
            ({"n": 3}, 3),
        ]
    finally:
        restarted.stop()
