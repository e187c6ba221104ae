"""Every bad input a client can send gets a documented answer and harms nobody else."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastapi_channels import (
    ChannelListener,
    Limits,
    SocketConnection,
    SocketListener,
    SocketPacket,
    channel,
    listener,
)
from tests.conftest import Start


@channel("room.*")
class Room(ChannelListener):
    @channel.on("boom")
    async def boom(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        raise RuntimeError("handler bug")

    @channel.on("echo")
    async def echo(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await self.broadcast(self.channel_name, "echo", packet.data)


@channel("fragile")
class Fragile(ChannelListener):
    async def is_authorised(self, connection: SocketConnection, user: Any) -> bool:
        raise RuntimeError("database down")


@listener("hang")
class Hang(SocketListener):
    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await asyncio.Event().wait()


@pytest.fixture
async def harness(start: Start) -> Any:
    return await start(
        listeners=[Room, Fragile, Hang],
        limits=Limits(handler_timeout=0.2, max_message_size=1024, max_subscriptions=3),
    )


def error(code: str, message: str, **extra: str) -> dict[str, Any]:
    return {"event": "channels:error", "data": {"code": code, "message": message, **extra}}


@pytest.mark.parametrize(
    ("frame", "code", "message"),
    [
        ("not json", "invalid-frame", "frame is not valid JSON"),
        ("[1, 2]", "invalid-frame", "frame must hold a JSON object"),
        ('"text"', "invalid-frame", "frame must hold a JSON object"),
        ("{}", "invalid-packet", "event must be a non-empty string"),
        ('{"event": 5}', "invalid-packet", "event must be a non-empty string"),
        ('{"event": ""}', "invalid-packet", "event must be a non-empty string"),
        (
            '{"event": "a\\u0000b"}',
            "invalid-packet",
            "event may not contain control or invisible characters",
        ),
        ('{"event": "x", "channel": 3}', "invalid-packet", "channel must be a non-empty string"),
        (
            '{"event": "x", "channel": "room.*"}',
            "invalid-packet",
            "channel may not contain whitespace, control or invisible characters, or '*'",
        ),
        ('{"event": "' + "e" * 201 + '"}', "invalid-packet", "event is longer than 200"),
        (
            '{"event": "x", "channel": "room.\\u200badmin"}',
            "invalid-packet",
            "channel may not contain whitespace, control or invisible characters, or '*'",
        ),
        (
            '{"event": "x", "channel": "room.\\u202enimda"}',
            "invalid-packet",
            "channel may not contain whitespace, control or invisible characters, or '*'",
        ),
        (
            '{"event": "a\\u2066b"}',
            "invalid-packet",
            "event may not contain control or invisible characters",
        ),
    ],
)
async def test_malformed_frames_get_an_error_packet(
    harness: Any, frame: str, code: str, message: str
) -> None:
    async with harness.client("a") as client:
        await client.send_text(frame)
        assert await client.receive() == error(code, message)
        await client.emit("still-alive")  # the connection keeps working
        assert (await client.receive()).data["code"] == "unknown-event"


async def test_binary_frames_get_an_error_packet(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.send_bytes(b'{"event": "x"}')
        assert await client.receive() == error("binary-frame", "only text frames carry packets")


async def test_unknown_plain_event(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.emit("nothing", {"x": 1})
        assert await client.receive() == error(
            "unknown-event", "no listener for event", event="nothing"
        )


async def test_unknown_channel_event_and_not_subscribed(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.emit("echo", channel="room.1")
        assert await client.receive() == error(
            "not-subscribed", "not subscribed to channel", event="echo", channel="room.1"
        )
        await client.subscribe("room.1")
        await client.emit("nope", channel="room.1")
        assert await client.receive() == error(
            "unknown-event", "no handler for event", event="nope", channel="room.1"
        )


async def test_a_raising_handler_only_fails_that_packet(harness: Any) -> None:
    async with harness.client("a") as a, harness.client("b") as b:
        await a.subscribe("room.1")
        await b.subscribe("room.1")
        await a.emit("boom", channel="room.1")
        assert await a.receive() == error(
            "handler-error", "handler failed", event="boom", channel="room.1"
        )
        await a.emit("echo", "after", channel="room.1")
        assert (await a.receive()).data == "after"
        assert (await b.receive()).data == "after"


async def test_a_hanging_handler_times_out(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.emit("hang")
        assert await client.receive() == error("handler-timeout", "handler timed out", event="hang")


async def test_is_authorised_raising_is_a_refusal(harness: Any) -> None:
    async with harness.client("a") as client:
        assert await client.subscribe("fragile") == {
            "channel": "fragile",
            "successful": False,
            "reason": "subscription refused",
        }


@pytest.mark.parametrize(
    ("data", "requested"),
    [(None, None), ({"channel": 5}, 5), ("room.1", None), ({"channel": "a\tb"}, "a\tb")],
)
async def test_malformed_subscribe_requests_are_answered(
    harness: Any, data: Any, requested: Any
) -> None:
    async with harness.client("a") as client:
        await client.emit("subscribe-channel-request", data)
        response = await client.receive()
        assert response.event == "subscribe-channel-response"
        assert response.data["channel"] == requested
        assert response.data["successful"] is False
        assert response.data["reason"]


async def test_subscription_limit(harness: Any) -> None:
    async with harness.client("a") as client:
        for n in range(3):
            assert (await client.subscribe(f"room.{n}"))["successful"]
        assert await client.subscribe("room.9") == {
            "channel": "room.9",
            "successful": False,
            "reason": "too many subscriptions",
        }


async def test_unsubscribe_with_a_bad_channel(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.emit("unsubscribe-channel-request", {"channel": 5})
        assert (await client.receive()).data["code"] == "invalid-packet"
        await client.unsubscribe("never-subscribed")
        await client.assert_no_message()


async def test_an_oversized_frame_closes_with_1009(harness: Any) -> None:
    async with harness.client("a") as big, harness.client("b") as other:
        await other.subscribe("room.1")
        await big.send_text('{"event": "x", "data": "' + "é" * 600 + '"}')
        assert await big.receive() == {"event": "disconnect", "data": {"reason": "message too big"}}
        assert await big.receive_closed() == (1009, "message too big")
        await other.emit("echo", 1, channel="room.1")
        assert (await other.receive()).data == 1


async def test_pong_from_first_generation_clients_is_ignored(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.emit("pong")
        await client.assert_no_message()
