"""Subscriptions, channel events, plain listeners and authorisation, end to end in-process."""

from __future__ import annotations

from typing import Any

import injector
import pytest

from fastapi_channels import (
    ChannelListener,
    SocketConnection,
    SocketListener,
    SocketPacket,
    SocketServer,
    channel,
    listener,
)
from tests.conftest import Start


class Greeter:
    """A user service the container provides to listeners."""

    def greet(self, name: str) -> str:
        return f"hello {name}"


@channel("user:chat.*")
class UserChat(ChannelListener):
    def __init__(self, greeter: Greeter, server: SocketServer) -> None:
        self.greeter = greeter
        self.server = server

    async def is_authorised(self, connection: SocketConnection, user: Any) -> bool:
        return user is not None and self.wildcard == user["id"]

    @channel.on("message")
    async def message(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await self.broadcast(
            self.channel_name,
            "message",
            {"text": packet.data["text"], "wildcard": self.wildcard, "by": user["id"]},
        )

    @channel.on("deleted-message")
    async def deleted(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await connection.send_to_channel(self.channel_name, "deleted", packet.data)

    @channel.on("greet")
    async def greet(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await connection.send("greeting", self.greeter.greet(user["name"]))

    async def not_a_handler(self, connection: Any, user: Any, packet: Any) -> None:
        raise AssertionError("only @channel.on methods are handlers")


@channel("global-chat")
class GlobalChat(ChannelListener):
    @channel.on("message")
    async def message(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await self.broadcast("global-chat", "message", packet.data)


@listener("typing")
class Typing(SocketListener):
    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await connection.send("typing-ack", {"data": packet.data, "user": user and user["id"]})


LISTENERS = [UserChat, GlobalChat, Typing]


@pytest.fixture
async def harness(start: Start) -> Any:
    return await start(listeners=LISTENERS)


async def test_ready_is_the_first_frame_and_carries_the_connection_id(harness: Any) -> None:
    async with harness.client("1") as client:
        assert client.ready is not None
        (connection,) = harness.server.connections
        assert client.ready.data == {"id": connection.id}
        assert connection.user == {"id": "1", "name": "1"}


async def test_subscribe_to_wildcard_channel_and_read_the_concrete_name(harness: Any) -> None:
    async with harness.client("7") as client:
        assert await client.subscribe("user:chat.7") == {
            "channel": "user:chat.7",
            "successful": True,
        }
        await client.emit("message", {"text": "hi"}, channel="user:chat.7")
        packet = await client.receive()
        assert packet == {
            "event": "message",
            "channel": "user:chat.7",
            "data": {"text": "hi", "wildcard": "7", "by": "7"},
        }


async def test_is_authorised_false_refuses_with_a_reason(harness: Any) -> None:
    async with harness.client("7") as client:
        response = await client.subscribe("user:chat.8")
        assert response == {
            "channel": "user:chat.8",
            "successful": False,
            "reason": "not authorised",
        }
        await client.emit("message", {"text": "x"}, channel="user:chat.8")
        error = await client.receive()
        assert error.event == "channels:error"
        assert error.data["code"] == "not-subscribed"
        assert "channel" not in error  # never a top-level channel the client did not subscribe to


async def test_no_listener_matches(harness: Any) -> None:
    async with harness.client("1") as client:
        response = await client.subscribe("nowhere.1")
        assert response["successful"] is False
        assert response["reason"] == "no channel matches this name"


async def test_event_names_that_are_not_identifiers(harness: Any) -> None:
    async with harness.client("3") as client:
        await client.subscribe("user:chat.3")
        await client.emit("deleted-message", {"id": 5}, channel="user:chat.3")
        assert await client.receive() == {
            "event": "deleted",
            "channel": "user:chat.3",
            "data": {"id": 5},
        }


async def test_listener_constructor_gets_services_from_the_container(start: Start) -> None:
    container = injector.Injector()
    harness = await start(listeners=LISTENERS, container=container)
    async with harness.client("ann") as client:
        await client.subscribe("user:chat.ann")
        await client.emit("greet", channel="user:chat.ann")
        assert (await client.receive()).data == "hello ann"


async def test_only_declared_handlers_run(harness: Any) -> None:
    async with harness.client("1") as client:
        await client.subscribe("user:chat.1")
        for event in ("not_a_handler", "is_authorised", "__init__", "_server", "broadcast"):
            await client.emit(event, channel="user:chat.1")
            error = await client.receive()
            assert error.data["code"] == "unknown-event", event


async def test_plain_listener_and_missing_data(harness: Any) -> None:
    async with harness.client("1") as client:
        await client.emit("typing")
        assert await client.receive() == {
            "event": "typing-ack",
            "data": {"data": None, "user": "1"},
        }


async def test_broadcast_reaches_only_subscribers_of_the_concrete_channel(harness: Any) -> None:
    async with (
        harness.client("1") as one,
        harness.client("2") as two,
        harness.client("1") as one_again,
    ):
        await one.subscribe("user:chat.1")
        await two.subscribe("user:chat.2")
        await one_again.subscribe("user:chat.1")
        await one.emit("message", {"text": "for one"}, channel="user:chat.1")
        assert (await one.receive()).data["text"] == "for one"
        assert (await one_again.receive()).data["text"] == "for one"
        await two.assert_no_message()


async def test_unsubscribe_stops_delivery(harness: Any) -> None:
    async with harness.client("a") as a, harness.client("b") as b:
        await a.subscribe("global-chat")
        await b.subscribe("global-chat")
        await b.unsubscribe("global-chat")
        await a.emit("message", "hi", channel="global-chat")
        assert (await a.receive()).data == "hi"
        await b.assert_no_message()
        assert harness.server.subscribers("global-chat") == harness.server.connections[:1]


async def test_subscribing_twice_is_answered_twice_and_kept_once(harness: Any) -> None:
    async with harness.client("a") as a:
        assert (await a.subscribe("global-chat"))["successful"]
        assert (await a.subscribe("global-chat"))["successful"]
        assert len(harness.server.subscribers("global-chat")) == 1


async def test_disconnect_forgets_everything(harness: Any) -> None:
    async with harness.client("a") as a:
        await a.subscribe("global-chat")
    assert harness.server.connections == []
    assert harness.server.subscribers("global-chat") == []
    assert harness.server.connections_of("a") == []
    assert harness.server.broker.topics == frozenset()
