"""Security properties, one test each (token and origin attacks live in tests/test_auth_*)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from fastapi import FastAPI

from fastapi_channels import (
    ChannelListener,
    Channels,
    SocketConnection,
    SocketPacket,
    channel,
)
from tests.conftest import Start, user_from_query
from tests.live import live_server


@channel("user:*")
class UserFeed(ChannelListener):
    async def is_authorised(self, connection: SocketConnection, user: Any) -> bool:
        return user is not None and self.wildcard == user["id"]

    @channel.on("post")
    async def post(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await self.broadcast(self.channel_name, "post", packet.data)

    async def _private(self, connection: Any, user: Any, packet: Any) -> None:
        raise AssertionError("never dispatched")


@pytest.fixture
async def harness(start: Start) -> Any:
    return await start(listeners=[UserFeed])


async def test_a_broadcast_to_user_1_never_reaches_a_user_2_subscriber(harness: Any) -> None:
    async with harness.client("1") as one, harness.client("2") as two:
        assert (await one.subscribe("user:1"))["successful"]
        assert (await two.subscribe("user:2"))["successful"]
        await harness.server.broadcast(UserFeed, "user:1", "post", "for 1")
        await harness.server.broadcast("user:*", "user:1", "post", "for 1 again")
        assert (await one.receive()).data == "for 1"
        assert (await one.receive()).data == "for 1 again"
        await two.assert_no_message()


async def test_another_users_private_channel_is_refused(harness: Any) -> None:
    async with harness.client("2") as two, harness.client() as anonymous:
        assert (await two.subscribe("user:1"))["reason"] == "not authorised"
        assert (await anonymous.subscribe("user:1"))["reason"] == "not authorised"
        await two.emit("post", "spoof", channel="user:1")
        assert (await two.receive()).data["code"] == "not-subscribed"


@pytest.mark.parametrize("event", ["__init__", "_private", "__class__", "is_authorised", "post "])
async def test_method_names_are_never_dispatched(harness: Any, event: str) -> None:
    async with harness.client("1") as one:
        await one.subscribe("user:1")
        await one.emit(event, channel="user:1")
        assert (await one.receive()).data["code"] == "unknown-event"


@pytest.mark.parametrize(
    "name",
    ["user:*", "user:1*", "*", "user:\u0000", "user:\x7f", "user: 1", "user:" + "9" * 300, ""],
)
async def test_hostile_channel_names_are_refused(harness: Any, name: str) -> None:
    async with harness.client("1") as one:
        response = await one.subscribe(name)
        assert response["channel"] == name
        assert response["successful"] is False
        assert harness.server.channel_counts() == {}


async def test_a_wildcard_subscription_cannot_eavesdrop_on_a_pattern(harness: Any) -> None:
    """Subscribing to the pattern text itself is refused, so no one receives every user."""
    async with harness.client("*") as star:
        assert (await star.subscribe("user:*"))["successful"] is False


async def test_invalid_utf8_in_a_text_frame_closes_only_that_connection() -> None:
    channels = Channels(user=user_from_query, listeners=[UserFeed])
    app = FastAPI()
    app.include_router(channels.router)
    async with (
        live_server(app) as address,
        websockets.connect(f"ws://{address}/ws?user=1") as good,
    ):
        await good.recv()
        await good.send(
            json.dumps({"event": "subscribe-channel-request", "data": {"channel": "user:1"}})
        )
        await good.recv()
        async with websockets.connect(f"ws://{address}/ws?user=2") as bad:
            await bad.recv()
            # a text frame (opcode 1) whose payload is not UTF-8, sent below the library
            bad.protocol.send_frame(  # type: ignore[attr-defined]
                websockets.frames.Frame(websockets.frames.Opcode.TEXT, b"\xff\xfe")
            )
            await bad.send(b"")  # flush
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(5):
                    while True:
                        await bad.recv()
            assert bad.close_code == 1007
        await good.send(json.dumps({"event": "post", "channel": "user:1", "data": "ok"}))
        assert json.loads(await good.recv())["data"] == "ok"
