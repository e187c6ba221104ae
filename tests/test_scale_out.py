"""Several processes on one broker, simulated in one: two apps with two Redis (one server or a
cluster) or NATS brokers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from demo.app import app as demo_app
from fastapi_channels import (
    Broker,
    ChannelListener,
    Channels,
    MemoryBroker,
    SocketConnection,
    SocketPacket,
    channel,
)
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.edge.channels import BROKER_URL_ENV
from fastapi_channels.testing import lifespan
from tests.conftest import Harness, Start
from tests.redis_support import RedisServer

redis_only = pytest.mark.parametrize("make_broker", ["redis"], indirect=True)
"""Runs a test using ``start`` on Redis only: what it shows needs several processes."""


@channel("room:*")
class Room(ChannelListener):
    pass


@channel("user:chat.*")
class UserChat(ChannelListener):
    pass


@channel("chat:*")
class Chat(ChannelListener):
    @channel.on("message")
    async def message(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await self.broadcast(self.channel_name, "message", packet.data)


@pytest.fixture(params=["redis", "nats", "redis-cluster"])
def shared(request: pytest.FixtureRequest) -> Callable[[], Broker]:
    """Makes brokers that share one server (Redis or NATS) or the session's Redis Cluster, under
    a prefix of the test's own."""
    if request.param in ("redis", "redis-cluster"):
        prefix: str = request.getfixturevalue("redis_prefix")
        if request.param == "redis-cluster":
            from fastapi_channels.brokers.redis_cluster import RedisClusterBroker

            seeds = request.getfixturevalue("redis_cluster").url
            return lambda: RedisClusterBroker(seeds, prefix=prefix)
        url: str = request.getfixturevalue("redis_url")
        return lambda: RedisBroker(url, prefix=prefix)
    from fastapi_channels.brokers.nats import NatsBroker

    nats_url: str = request.getfixturevalue("nats_url")
    subjects: str = request.getfixturevalue("nats_prefix")
    return lambda: NatsBroker(nats_url, prefix=subjects)


@pytest.fixture
async def pair(start: Start, shared: Callable[[], Broker]) -> tuple[Harness, Harness]:
    """Two apps ("processes") on one shared server, under one prefix."""
    return (
        await start(listeners=[Room, UserChat], broker=shared()),
        await start(listeners=[Room, UserChat], broker=shared()),
    )


@redis_only
async def test_a_broadcast_reaches_subscribers_on_every_process(
    pair: tuple[Harness, Harness],
) -> None:
    a, b = pair
    async with a.client("ann") as on_a, b.client("bob") as on_b, b.client("cy") as elsewhere:
        assert (await on_a.subscribe("room:1"))["successful"]
        assert (await on_b.subscribe("room:1"))["successful"]
        assert (await elsewhere.subscribe("room:2"))["successful"]
        await a.server.broadcast(Room, "room:1", "message", {"n": 1})
        for client in (on_a, on_b):
            assert await client.receive() == {
                "event": "message",
                "channel": "room:1",
                "data": {"n": 1},
            }
        await elsewhere.assert_no_message()


@redis_only
async def test_a_user_is_reached_on_the_process_holding_its_connections(
    pair: tuple[Harness, Harness],
) -> None:
    a, b = pair
    async with b.client("bob") as bob, b.client("bob") as bob_again, a.client("ann") as ann:
        # Straight after ``ready``: the user is reachable from every process by then.
        await a.server.send_to_user("bob", "poke", {"from": "a"})
        for client in (bob, bob_again):
            assert await client.receive() == {"event": "poke", "data": {"from": "a"}}

        assert (await bob.subscribe("user:chat.bob"))["successful"]
        await a.server.send_to_user_via_channel("bob", UserChat, "user:chat.bob", "note", 1)
        assert await bob.receive() == {"event": "note", "channel": "user:chat.bob", "data": 1}
        await bob_again.assert_no_message()

        await a.server.disconnect_user("bob", "banned")
        for client in (bob, bob_again):
            assert await client.receive() == {"event": "disconnect", "data": {"reason": "banned"}}
            assert await client.receive_closed() == (1000, "banned")
        await ann.assert_no_message()


class GatedBroker(RedisBroker):
    """Holds every Redis subscription until ``gate`` opens, as a slow Redis would."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def _subscribe(self, topic: str) -> None:
        self.entered.set()
        await self.gate.wait()
        await super()._subscribe(topic)


@redis_only
async def test_ready_comes_only_once_the_user_is_reachable_from_every_process(
    start: Start, redis_url: str, redis_prefix: str
) -> None:
    a = await start(broker=RedisBroker(redis_url, prefix=redis_prefix))
    gated = GatedBroker(redis_url, prefix=redis_prefix)
    b = await start(broker=gated)
    bob = b.client("bob")
    connecting = asyncio.create_task(bob.connect())
    async with asyncio.timeout(2):
        await gated.entered.wait()
    done, _ = await asyncio.wait({connecting}, timeout=0.2)
    assert not done, "ready was sent before the user's subscription was made"

    gated.gate.set()
    assert (await connecting).event == "ready"
    await a.server.send_to_user("bob", "poke")
    assert (await bob.receive()).event == "poke"
    await bob.close()


@redis_only
async def test_local_chat_goes_on_while_redis_is_down(
    redis_server: Callable[[], RedisServer],
    start: Start,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = redis_server()
    broker = RedisBroker(server.url, prefix=redis_prefix, reconnect_delay=(0.02, 0.2))
    harness = await start(listeners=[Chat], broker=broker)
    async with harness.client("ann") as ann, harness.client("bob") as bob:
        for client in (ann, bob):
            assert (await client.subscribe("chat:1"))["successful"]
        server.stop()
        async with asyncio.timeout(5):
            await broker.wait_for_state(BrokerState.RECONNECTING)
        assert not harness.server.health()["healthy"]

        await ann.emit("message", {"text": "still here"}, channel="chat:1")
        for client in (ann, bob):
            assert (await client.receive()).data == {"text": "still here"}
        error = await ann.receive()  # the handler's broadcast did not reach other processes
        assert (error.event, error.data["code"]) == ("channels:error", "broker-unavailable")
        (record,) = [r for r in caplog.records if "handler for 'message'" in r.getMessage()]
        assert record.levelname == "WARNING" and record.exc_info is None

        server.start()
        async with asyncio.timeout(5):
            await broker.wait_for_state(BrokerState.CONNECTED)
        await bob.emit("message", {"text": "back"}, channel="chat:1")
        for client in (ann, bob):
            assert (await client.receive()).data == {"text": "back"}
        await bob.assert_no_message()


async def test_health_reports_this_process_and_its_broker(start: Start) -> None:
    harness = await start(listeners=[Room])
    async with harness.client("ann") as ann:
        await ann.subscribe("room:1")
        report = harness.server.health()
    broker = harness.server.broker
    assert report == {
        "healthy": True,
        "connections": 1,
        "channels": 1,
        "users": 1,
        "broker": {
            "broker": broker.name,
            "state": "connected",
            "healthy": True,
            "topics": 2,  # the channel and the user
            "last_error": None,
            "changed_at": broker.health().changed_at,
        },
    }


async def test_the_demo_health_route() -> None:
    async with lifespan(demo_app):
        transport = httpx.ASGITransport(app=demo_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            response = await http.get("/health")
    assert response.status_code == 200
    assert response.json()["broker"]["state"] == "connected"
    assert "last_error" not in response.json()["broker"]  # it can name the Redis host


def test_the_broker_url_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BROKER_URL_ENV, "redis://127.0.0.1:6379/0?prefix=shop")
    broker: Any = Channels().server.broker
    assert isinstance(broker, RedisBroker)
    assert broker.prefix == "shop"

    explicit = MemoryBroker()
    assert Channels(broker=explicit).server.broker is explicit
    assert isinstance(Channels(broker="memory://").server.broker, MemoryBroker)

    monkeypatch.delenv(BROKER_URL_ENV)
    assert isinstance(Channels().server.broker, MemoryBroker)
