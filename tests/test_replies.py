"""Replies: a packet with an ``id`` is answered exactly once, for every outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from fastapi_channels import (
    ChannelListener,
    Limits,
    Middleware,
    MiddlewareContext,
    Reject,
    ReplyError,
    SocketConnection,
    SocketListener,
    channel,
    listener,
)
from fastapi_channels.app.middleware import CallNext
from tests.conftest import Start


class Sum(BaseModel):
    a: int
    b: int


class Total(BaseModel):
    total: int


class Gate(Middleware):
    async def event(self, context: MiddlewareContext, call_next: CallNext) -> None:
        packet = context.packet
        if packet is not None and packet.event == "guarded":
            raise Reject("closed for now")
        await call_next()


@channel("math.*")
class Math(ChannelListener):
    middleware = (Gate(),)

    async def is_authorised(self, connection: SocketConnection, user: Any) -> bool:
        return self.wildcard != "secret"

    @channel.on("add")
    async def add(self, data: Sum) -> Total:
        return Total(total=data.a + data.b)

    @channel.on("silent")
    async def silent(self) -> None:
        return None

    @channel.on("guarded")
    async def guarded(self) -> str:
        return "never"

    @channel.on("refuse")
    async def refuse(self) -> None:
        raise Reject("no thanks")

    @channel.on("boom")
    async def boom(self) -> None:
        raise RuntimeError("handler bug")

    @channel.on("hang")
    async def hang(self) -> None:
        await asyncio.Event().wait()

    @channel.on("unserialisable")
    async def unserialisable(self) -> object:
        return object()


@channel("members")
class Members(ChannelListener):
    require_user = True

    @channel.on("who")
    async def who(self, user: Any) -> str:
        return str(user["id"])


@listener("echo")
class Echo(SocketListener):
    async def handle(self, data: Any) -> Any:
        return data


@pytest.fixture
async def harness(start: Start) -> Any:
    return await start(
        listeners=[Math, Members, Echo], limits=Limits(handler_timeout=0.2, max_subscriptions=2)
    )


def failed(id: Any, code: str, message: str) -> dict[str, Any]:
    return {"event": "channels:reply", "id": id, "error": {"code": code, "message": message}}


async def reply_to(client: Any, event: str, data: Any = ..., **options: Any) -> Any:
    """Emit with an id and return the one reply; nothing else may follow it."""
    packet_id = options.pop("id", "r1")
    await client.emit(event, data, id=packet_id, **options)
    reply = await client.receive()
    await client.assert_no_message()
    return reply


async def test_success_carries_the_return_value(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.subscribe("math.1")
        assert await reply_to(client, "add", {"a": 2, "b": 3}, channel="math.1", id=7) == {
            "event": "channels:reply",
            "id": 7,
            "data": {"total": 5},
        }
        assert await client.request("add", {"a": 1, "b": 1}, channel="math.1") == {"total": 2}


async def test_success_with_none_still_replies(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.subscribe("math.1")
        reply = await reply_to(client, "silent", channel="math.1", id="s-1")
        assert reply == {"event": "channels:reply", "id": "s-1", "data": None}


async def test_plain_events_reply_too(harness: Any) -> None:
    async with harness.client("a") as client:
        assert await client.request("echo", [1, "two"]) == [1, "two"]


async def test_validation_failure(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.subscribe("math.1")
        reply = await reply_to(client, "add", {"a": "x" * 300}, channel="math.1")
        assert reply["error"]["code"] == "invalid-data"
        assert reply["error"]["message"] == "2 validation errors"
        assert [e["loc"] for e in reply["error"]["errors"]] == [["a"], ["b"]]
        assert "xxx" not in str(reply)
        with pytest.raises(ReplyError) as caught:
            await client.request("add", {"a": 1}, channel="math.1")
        assert caught.value.code == "invalid-data"
        assert caught.value.errors == [{"loc": ["b"], "msg": "Field required", "type": "missing"}]


@pytest.mark.parametrize(
    ("event", "channel_name", "code", "message"),
    [
        ("guarded", "math.1", "rejected", "closed for now"),
        ("refuse", "math.1", "rejected", "no thanks"),
        ("boom", "math.1", "handler-error", "handler failed"),
        ("hang", "math.1", "handler-timeout", "handler timed out"),
        ("unserialisable", "math.1", "handler-error", "handler failed"),
        ("nope", "math.1", "unknown-event", "no handler for event"),
        ("add", "math.2", "not-subscribed", "not subscribed to channel"),
        ("nope", None, "unknown-event", "no listener for event"),
    ],
    ids=[
        "middleware-rejects",
        "handler-rejects",
        "handler-fails",
        "timeout",
        "unserialisable",
        "unknown-channel-event",
        "not-subscribed",
        "unknown-plain-event",
    ],
)
async def test_every_failure_is_one_error_reply(
    harness: Any, event: str, channel_name: str | None, code: str, message: str
) -> None:
    async with harness.client("a") as client:
        await client.subscribe("math.1")
        assert await reply_to(client, event, {}, channel=channel_name) == failed(
            "r1", code, message
        )


async def test_unauthenticated(start: Start) -> None:
    harness = await start(listeners=[Members])
    async with harness.client() as anonymous, harness.client("ann") as ann:
        await ann.subscribe("members")
        assert await ann.request("who", channel="members") == "ann"
        await anonymous.emit("subscribe-channel-request", {"channel": "members"}, id=1)
        assert (await anonymous.receive()).data["successful"] is False
        assert await anonymous.receive() == failed(1, "unauthenticated", "authentication required")


async def test_subscribe_with_an_id_gets_the_envuso_response_and_a_reply(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.emit("subscribe-channel-request", {"channel": "math.1"}, id="sub")
        assert await client.receive() == {
            "event": "subscribe-channel-response",
            "data": {"channel": "math.1", "successful": True},
        }
        assert await client.receive() == {
            "event": "channels:reply",
            "id": "sub",
            "data": {"channel": "math.1"},
        }
        await client.assert_no_message()


@pytest.mark.parametrize(
    ("requested", "code", "reason"),
    [
        ("math.secret", "not-authorised", "not authorised"),
        ("nowhere", "unknown-channel", "no channel matches this name"),
        (
            "a b",
            "invalid-packet",
            "channel may not contain whitespace, control or invisible characters, or '*'",
        ),
        ("math.3", "too-many-subscriptions", "too many subscriptions"),
    ],
)
async def test_subscribe_failures_reply_with_a_code(
    harness: Any, requested: str, code: str, reason: str
) -> None:
    async with harness.client("a") as client:
        await client.subscribe("math.1")
        if code == "too-many-subscriptions":
            await client.subscribe("math.2")
        await client.emit("subscribe-channel-request", {"channel": requested}, id=3)
        assert await client.receive() == {
            "event": "subscribe-channel-response",
            "data": {"channel": requested, "successful": False, "reason": reason},
        }
        assert await client.receive() == failed(3, code, reason)
        await client.assert_no_message()


async def test_unsubscribe_replies(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.subscribe("math.1")
        data = {"channel": "math.1"}
        reply = await reply_to(client, "unsubscribe-channel-request", data, channel="math.1")
        assert reply.data == {"channel": "math.1", "was_subscribed": True}
        reply = await reply_to(client, "unsubscribe-channel-request", data, channel="math.1")
        assert reply.data == {"channel": "math.1", "was_subscribed": False}
        reply = await reply_to(client, "unsubscribe-channel-request", {"channel": 5})
        assert reply == failed("r1", "invalid-packet", "channel must be a string")


async def test_a_malformed_packet_with_a_valid_id_gets_a_reply(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.send_text('{"id": 9, "event": 5}')
        assert await client.receive() == failed(
            9, "invalid-packet", "event must be a non-empty string"
        )
        await client.send_text('{"id": "x", "event": "e", "channel": "a*"}')
        assert (await client.receive()).error["code"] == "invalid-packet"


@pytest.mark.parametrize("bad_id", ["1.5", "true", '""', '"' + "i" * 65 + '"', "9007199254740992"])
async def test_an_invalid_id_gets_an_error_packet(harness: Any, bad_id: str) -> None:
    async with harness.client("a") as client:
        await client.send_text('{"event": "echo", "id": ' + bad_id + "}")
        error = await client.receive()
        assert error.event == "channels:error"
        assert error.data["code"] == "invalid-packet"
        assert error.data["message"].startswith("id must be")
        await client.assert_no_message()


async def test_ids_are_echoed_exactly(harness: Any) -> None:
    async with harness.client("a") as client:
        for packet_id in ("i" * 64, 9007199254740991, -1, 0, "0"):
            reply = await reply_to(client, "echo", None, id=packet_id)
            assert reply["id"] == packet_id and type(reply["id"]) is type(packet_id)


async def test_pong_with_an_id_is_acknowledged(harness: Any) -> None:
    async with harness.client("a") as client:
        assert await client.request("pong") is None


async def test_without_an_id_there_is_no_reply(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.subscribe("math.1")
        await client.emit("add", {"a": 1, "b": 2}, channel="math.1")
        await client.emit("echo", 1)
        await client.emit("unsubscribe-channel-request", {"channel": "math.1"}, channel="math.1")
        await client.assert_no_message()


async def test_request_times_out_and_keeps_other_packets(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.subscribe("math.1")
        with pytest.raises(TimeoutError):
            await client.receive_reply("never", timeout=0.05)
        await harness.server.broadcast(Math, "math.1", "note", 1)
        assert await client.request("echo", 2) == 2
        assert (await client.receive()).event == "note"


async def test_a_packet_dropped_by_the_rate_limit_gets_its_reply(start: Start) -> None:
    harness = await start(listeners=[Echo], limits=Limits(rate=0.5, burst=1, rate_strikes=5))
    async with harness.client("a") as client:
        assert await client.request("echo", 1) == 1
        with pytest.raises(ReplyError) as caught:
            await client.request("echo", 2)
        assert caught.value.code == "rate-limited"
        await client.send_text('{"event": "echo", "id": 1.5}')
        error = await client.receive()  # an invalid id cannot be replied to
        assert error.event == "channels:error" and error.data["code"] == "rate-limited"


class NoEntry(Middleware):
    async def subscribe(self, context: MiddlewareContext, call_next: CallNext) -> None:
        if context.channel == "math.closed":
            raise Reject("closed")
        if context.channel == "math.broken":
            raise RuntimeError("middleware bug")
        await call_next()


async def test_subscribe_refused_by_middleware_or_a_failure(start: Start) -> None:
    harness = await start(listeners=[Math], middleware=[NoEntry()])
    async with harness.client("a") as client:
        for requested, code, reason in (
            ("math.closed", "rejected", "closed"),
            ("math.broken", "handler-error", "subscription refused"),
        ):
            await client.emit("subscribe-channel-request", {"channel": requested}, id=requested)
            assert (await client.receive()).data["reason"] == reason
            assert await client.receive() == failed(requested, code, reason)
