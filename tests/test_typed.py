"""Typed handlers: data validated into declared types, errors that never echo input, and
signatures checked once, at registration."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from fastapi_channels import (
    ChannelListener,
    Channels,
    ConfigurationError,
    InvalidData,
    SocketConnection,
    SocketListener,
    SocketPacket,
    channel,
    listener,
)
from fastapi_channels.app.invocation import MAX_ERRORS, plan_for
from tests.conftest import Start

if TYPE_CHECKING:
    import fastapi_channels.core.connection


class ChatMessage(BaseModel):
    text: str = Field(max_length=200)
    mood: int = 0


class Item(BaseModel):
    n: int


class JoinParams(BaseModel):
    password: str


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Tag(TypedDict):
    name: str


calls: list[Any] = []


@channel("room.*")
class Room(ChannelListener):
    async def is_authorised(self, user: Any, params: JoinParams) -> bool:
        return params.password == "sesame"

    @channel.on("message")
    async def message(self, message: ChatMessage, connection: SocketConnection) -> None:
        calls.append(message)
        await connection.send_to_channel(self.channel_name, "message", message)

    @channel.on("items")
    async def items(self, data: list[Item]) -> None:
        calls.append(data)

    @channel.on("counts")
    async def counts(self, data: dict[str, int]) -> None:
        calls.append(data)

    @channel.on("point")
    async def point(self, point: Point, *, user: Any, packet: SocketPacket) -> None:
        calls.append((point, user["id"], packet.event))

    @channel.on("tag")
    async def tag(self, tag: Tag | None = None) -> None:
        calls.append(tag)

    @channel.on("raw")
    async def raw(self, data: Any, packet: SocketPacket) -> None:
        calls.append((data, packet.data))

    @channel.on("nothing")
    async def nothing(self) -> None:
        calls.append("nothing")

    @channel.on("legacy")
    async def legacy(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        calls.append(("legacy", user["id"], packet.data))

    @channel.on("handler-check")
    async def handler_check(self, data: Any) -> None:
        if data != "ok":
            raise InvalidData("must be ok", [{"loc": [], "msg": "must be ok", "type": "value"}])


@listener("typing")
class Typing(SocketListener):
    # An annotation imported under TYPE_CHECKING only: recognised by its name.
    async def handle(
        self, connection: fastapi_channels.core.connection.SocketConnection, data: list[int]
    ) -> None:
        await connection.send("typing-ack", sum(data))


@pytest.fixture
async def harness(start: Start) -> Any:
    calls.clear()
    return await start(listeners=[Room, Typing])


async def joined(harness: Any, name: str = "a") -> Any:
    client = harness.client(name)
    await client.__aenter__()
    await client.emit("subscribe-channel-request", {"channel": "room.1", "password": "sesame"})
    response = await client.receive()
    assert response.data == {"channel": "room.1", "successful": True}
    return client


async def test_a_model_parameter_receives_the_validated_data(harness: Any) -> None:
    client = await joined(harness)
    await client.emit("message", {"text": "hi", "mood": "3"}, channel="room.1")
    assert await client.receive() == {
        "event": "message",
        "channel": "room.1",
        "data": {"text": "hi", "mood": 3},
    }
    assert calls == [ChatMessage(text="hi", mood=3)]
    await client.close()


async def test_invalid_data_gets_an_error_listing_problems_and_the_handler_does_not_run(
    harness: Any,
) -> None:
    client = await joined(harness)
    secret = "s3cret-" + "x" * 500
    await client.emit("message", {"text": secret, "mood": secret}, channel="room.1")
    error = await client.receive()
    assert error == {
        "event": "channels:error",
        "data": {
            "code": "invalid-data",
            "message": "2 validation errors",
            "event": "message",
            "channel": "room.1",
            "errors": [
                {
                    "loc": ["text"],
                    "msg": "String should have at most 200 characters",
                    "type": "string_too_long",
                },
                {
                    "loc": ["mood"],
                    "msg": "Input should be a valid integer, unable to parse string as an integer",
                    "type": "int_parsing",
                },
            ],
        },
    }
    assert "s3cret" not in str(error)
    assert calls == []
    await client.assert_no_message()
    await client.close()


async def test_missing_data_is_invalid(harness: Any) -> None:
    client = await joined(harness)
    await client.emit("message", channel="room.1")
    error = await client.receive()
    assert error.data["code"] == "invalid-data"
    assert error.data["errors"][0]["loc"] == []
    assert calls == []
    await client.close()


async def test_the_error_list_is_bounded_and_locations_are_truncated(harness: Any) -> None:
    client = await joined(harness)
    await client.emit("items", [{"n": "x"}] * 100, channel="room.1")
    error = await client.receive()
    assert error.data["message"] == "100 validation errors"
    assert len(error.data["errors"]) == MAX_ERRORS
    assert error.data["errors"][1]["loc"] == [1, "n"]
    await client.emit("counts", {"k" * 1000: "not a number"}, channel="room.1")
    error = await client.receive()
    (problem,) = error.data["errors"]
    assert problem["loc"] == ["k" * 64]
    await client.close()


async def test_dataclasses_typeddicts_keywords_and_optional_data(harness: Any) -> None:
    client = await joined(harness, "ann")
    await client.emit("point", {"x": 1, "y": "2"}, channel="room.1")
    await client.emit("tag", channel="room.1")
    await client.emit("tag", {"name": "t"}, channel="room.1")
    await client.emit("tag", {"name": 5}, channel="room.1")
    assert (await client.receive()).data["errors"][0]["loc"] == ["name"]
    assert calls == [(Point(1, 2), "ann", "point"), None, {"name": "t"}]
    await client.close()


async def test_untyped_data_no_data_and_the_positional_form(harness: Any) -> None:
    client = await joined(harness, "bo")
    await client.emit("raw", {"any": ["thing"]}, channel="room.1")
    await client.emit("nothing", {"ignored": True}, channel="room.1")
    await client.emit("legacy", [1], channel="room.1")
    await client.emit("handler-check", "ok", channel="room.1")
    await client.assert_no_message()
    assert calls == [({"any": ["thing"]}, {"any": ["thing"]}), "nothing", ("legacy", "bo", [1])]
    await client.close()


async def test_a_handler_may_raise_invalid_data_itself(harness: Any) -> None:
    client = await joined(harness)
    await client.emit("handler-check", "nope", channel="room.1")
    error = await client.receive()
    assert error.data["code"] == "invalid-data"
    assert error.data["errors"] == [{"loc": [], "msg": "must be ok", "type": "value"}]
    await client.close()


async def test_plain_listener_with_typed_data(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.emit("typing", [1, 2, "3"])
        assert await client.receive() == {"event": "typing-ack", "data": 6}
        await client.emit("typing", "nope")
        error = await client.receive()
        assert error.data["code"] == "invalid-data"
        assert "channel" not in error.data


async def test_typed_is_authorised_receives_the_subscribe_data(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.emit("subscribe-channel-request", {"channel": "room.2", "password": "no"})
        assert (await client.receive()).data == {
            "channel": "room.2",
            "successful": False,
            "reason": "not authorised",
        }
        assert await client.subscribe("room.3") == {
            "channel": "room.3",
            "successful": False,
            "reason": "invalid data",
        }
        await client.assert_no_message()


async def test_outgoing_models_are_serialised(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.subscribe("room.7")  # refused, yet plain sends reach the connection
        (connection,) = harness.server.connections
        await connection.send("note", ChatMessage(text="plain"))
        assert await client.receive() == {"event": "note", "data": {"text": "plain", "mood": 0}}
    client = await joined(harness)
    await harness.server.broadcast(Room, "room.1", "note", [Item(n=1), Point(2, 3)])
    assert (await client.receive()).data == [{"n": 1}, {"x": 2, "y": 3}]
    await client.close()


# ---------------------------------------------------------------------- signature errors


def test_a_parameter_nothing_can_satisfy_fails_with_the_handler_named() -> None:
    with pytest.raises(ConfigurationError, match=r"Bad\.handler .*'count'"):

        @channel("bad")
        class Bad(ChannelListener):
            @channel.on("x")
            async def handler(self, count: int) -> None: ...


def test_two_data_parameters_fail() -> None:
    with pytest.raises(ConfigurationError, match=r"Two\.handler: only one parameter .* a, b"):

        @channel("two")
        class Two(ChannelListener):
            @channel.on("x")
            async def handler(self, a: Item, b: ChatMessage) -> None: ...


def test_the_positional_form_is_not_guessed_when_an_annotation_contradicts_it() -> None:
    with pytest.raises(ConfigurationError, match=r"Mixed\.handler .*'connection'"):

        @channel("mixed")
        class Mixed(ChannelListener):
            @channel.on("x")
            async def handler(self, connection, user, body: Item) -> None:  # type: ignore[no-untyped-def]
                ...


def test_a_typed_is_authorised_is_checked_too() -> None:
    with pytest.raises(ConfigurationError, match=r"Auth\.is_authorised must take \(self, conn"):

        @channel("auth")
        class Auth(ChannelListener):
            async def is_authorised(self, token: str) -> bool:  # type: ignore[override]
                return True


def test_a_plain_listener_handle_is_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"Plain\.handle .*'n'"):

        @listener("plain")
        class Plain(SocketListener):
            async def handle(self, n: int) -> None:  # type: ignore[override]
                ...


async def test_hints_that_resolve_only_later_are_checked_at_registration() -> None:
    # ``Later`` is local to this function: the annotation cannot be resolved from the module,
    # so decoration postpones the check and registration reports it, naming the handler.
    class Later(BaseModel):
        x: int

    @channel("later")
    class Deferred(ChannelListener):
        @channel.on("x")
        async def handler(self, body: Later) -> None: ...

    assert plan_for(Deferred, "handler", strict=False) is None
    with pytest.raises(ConfigurationError, match=r"Deferred\.handler .*'body' \('Later'\)"):
        Channels(listeners=[Deferred])


async def test_signature_errors_stop_the_start_up(start: Start) -> None:
    class Later(BaseModel):
        x: int

    @listener("later")
    class Deferred(SocketListener):
        async def handle(self, body: Later) -> None: ...  # type: ignore[override]

    with pytest.raises(ConfigurationError, match=r"Deferred\.handle"):
        await start(listeners=[Deferred])


def test_plans_are_built_once_per_function() -> None:
    plan = plan_for(Room, "message")
    assert plan is plan_for(Room, "message")
    assert plan is not None and plan.adapter is not None
    legacy = plan_for(Room, "legacy")
    assert legacy is not None and legacy.fast and legacy.adapter is None


async def test_invalid_subscribe_data_with_an_id_replies_with_the_problems(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.emit("subscribe-channel-request", {"channel": "room.4"}, id="j")
        assert (await client.receive()).data["reason"] == "invalid data"
        reply = await client.receive()
        assert reply.error == {
            "code": "invalid-data",
            "message": "invalid data",
            "errors": [{"loc": ["password"], "msg": "Field required", "type": "missing"}],
        }
