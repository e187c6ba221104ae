"""Attacks replayed against history and presence: what a client can make the server store, and
what subscribers see of a room while Redis restarts."""

from __future__ import annotations

import asyncio
from typing import Any

from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis

from demo.app import app as demo_app
from demo.app import channels as demo_channels
from fastapi_channels import ChannelListener, History, Limits, ReplyError, channel
from fastapi_channels.brokers import MemoryBroker
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.testing import SocketTestClient, lifespan
from tests.conftest import Harness

TIMEOUT = 5.0
MADE_UP = 400
"""Direct messages to names that do not exist, as in the report that found the hole."""
BOUND = 20


@channel("dm:*")
class Direct(ChannelListener):
    """Sends ``data`` on to ``dm:<data.to>``, a name the client chooses."""

    history = History(size=100, ttl=24 * 3600, max_channels=BOUND)

    @channel.on("send")
    async def send(self, connection: Any, user: Any, packet: Any) -> None:
        await self.broadcast(f"dm:{packet.data['to']}", "said", packet.data)


async def test_made_up_channel_names_fill_redis_no_further_than_max_channels(
    redis_url: str, redis_prefix: str
) -> None:
    app = Harness.build(
        listeners=[Direct],
        broker=RedisBroker(redis_url, prefix=redis_prefix),
        limits=Limits(rate=None),
    )
    redis = Redis.from_url(redis_url)
    try:
        async with lifespan(app.app), app.client("mallory") as mallory:
            assert (await mallory.subscribe("dm:mallory"))["successful"]
            refused = 0
            for n in range(MADE_UP):
                try:
                    await mallory.request("send", {"to": f"ghost-{n}"}, channel="dm:mallory")
                except ReplyError as exc:
                    assert exc.code == "history-full"
                    refused += 1
            assert refused == MADE_UP - (BOUND - 1)  # dm:mallory holds one place itself
            keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}:history*")]
            # Each channel holding history: its stream and its meta hash; plus the quota.
            assert len(keys) <= 2 * BOUND + 1, len(keys)
            used = sum([await redis.memory_usage(key) or 0 for key in keys])
            assert used < BOUND * 8 * 1024, used  # about 94 KB here; 400 names made 2.2 MB
    finally:
        await redis.aclose()


async def test_the_demo_refuses_direct_messages_to_names_that_never_logged_in() -> None:
    hub = demo_channels.server.broker
    assert isinstance(hub, MemoryBroker)
    async with (
        lifespan(demo_app),
        AsyncClient(transport=ASGITransport(app=demo_app), base_url="http://demo") as http,
    ):
        token = (await http.post("/login", json={"username": "mallory"})).json()["token"]
        async with SocketTestClient(demo_app, subprotocols=[token]) as mallory:
            assert (await mallory.subscribe("chat:user.mallory"))["successful"]
            kept = len(hub.hub.streams)
            answers = await asyncio.gather(
                *(
                    mallory.request(
                        "message", {"to": f"ghost-{n}", "text": "x"}, channel="chat:user.mallory"
                    )
                    for n in range(40)
                ),
                return_exceptions=True,
            )
            assert all(isinstance(a, ReplyError) and a.code == "rejected" for a in answers)
            assert len(hub.hub.streams) == kept  # no inbox was made for any of them


@channel("room:*")
class Room(ChannelListener):
    presence = True


PRESENCE_TIMEOUT = 1.5
FULL_LIST_WITHIN = PRESENCE_TIMEOUT * 4 / 3 + 1.5
"""The bound on a full member list after Redis is back: the window a lost store stays unsettled
(one presence timeout from the first renewal that finds the loss, which comes within a renewal
interval), plus slack for reconnecting on a busy machine."""


async def until_whole(
    client: SocketTestClient, names: set[str], seen: list[dict[str, Any]]
) -> None:
    """Read ``client``'s packets until a complete member list; every list must be whole or
    marked partial, and no member may leave."""
    while True:
        packet = await client.receive(FULL_LIST_WITHIN)
        assert packet.event != "channels:leave", packet
        if packet.event == "channels:presence":
            seen.append(packet.data)
            if not packet.data.get("partial"):
                assert {m["id"] for m in packet.data["members"]} == names, packet
                return


async def test_a_redis_restart_never_shows_subscribers_a_room_emptier_than_it_is(
    redis_server: Any,
) -> None:
    server = redis_server()
    fast = {"reconnect_delay": (0.02, 0.1), "timeout": 1.0}
    a = Harness.build(
        listeners=[Room],
        broker=RedisBroker(server.url, **fast),
        presence_timeout=PRESENCE_TIMEOUT,
    )
    b = Harness.build(
        listeners=[Room],
        broker=RedisBroker(server.url, **fast),
        presence_timeout=PRESENCE_TIMEOUT,
    )
    names = {"ann", "bob"}
    async with lifespan(a.app), lifespan(b.app), a.client("ann") as ann, b.client("bob") as bob:
        assert (await ann.subscribe("room:1"))["successful"]
        await until_whole(ann, {"ann"}, [])
        assert (await bob.subscribe("room:1"))["successful"]
        await until_whole(bob, names, [])
        assert (await ann.receive(TIMEOUT)).event == "channels:join"
        loop = asyncio.get_running_loop()
        server.stop()
        server.start()  # the same port, empty: no persistence
        began = loop.time()
        async with a.client("cy") as cy:  # a new subscriber while the store refills
            assert (await cy.subscribe("room:1"))["successful"]
            seen: dict[str, list[dict[str, Any]]] = {"ann": [], "bob": [], "cy": []}
            await asyncio.gather(
                until_whole(ann, names | {"cy"}, seen["ann"]),
                until_whole(bob, names | {"cy"}, seen["bob"]),
                until_whole(cy, names | {"cy"}, seen["cy"]),
            )
            took = loop.time() - began
        assert took <= FULL_LIST_WITHIN, took
        assert any(data.get("partial") for data in seen["ann"] + seen["bob"])
