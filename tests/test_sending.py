"""Every send path: from handlers, from HTTP routes, to users, and the checks on channels."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from fastapi_channels import (
    ChannelListener,
    Inject,
    InvalidChannel,
    SocketServer,
    SocketUserMixin,
    channel,
)
from tests.conftest import Start


@channel("global-chat")
class GlobalChat(ChannelListener):
    pass


@channel("user:chat.*")
class UserChat(ChannelListener):
    pass


class Announcement(BaseModel):
    text: str


class User(SocketUserMixin):
    def __init__(self, id: str) -> None:
        self.id = id


def build_app() -> FastAPI:
    app = FastAPI()

    @app.post("/announce")
    async def announce(body: Announcement, server: SocketServer = Inject(SocketServer)) -> None:
        await server.broadcast(GlobalChat, "global-chat", "message", body)

    @app.post("/users/{user_id}/poke")
    async def poke(user_id: str) -> None:
        await User(user_id).send_socket_event("poke", {"from": "http"})

    return app


@pytest.fixture
async def harness(start: Start) -> Any:
    return await start(app=build_app(), listeners=[GlobalChat, UserChat])


async def post(harness: Any, path: str, json: Any = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.post(path, json=json)


async def test_broadcast_from_an_http_route_with_injected_server(harness: Any) -> None:
    async with harness.client("a") as a, harness.client("b") as b, harness.client("c") as c:
        await a.subscribe("global-chat")
        await b.subscribe("global-chat")
        response = await post(harness, "/announce", {"text": "hello all"})
        assert response.status_code == 200
        for client in (a, b):
            assert await client.receive() == {
                "event": "message",
                "channel": "global-chat",
                "data": {"text": "hello all"},
            }
        await c.assert_no_message()


async def test_user_model_mixin_reaches_every_connection_of_the_user(harness: Any) -> None:
    async with (
        harness.client("u1") as first,
        harness.client("u1") as second,
        harness.client("u2") as other,
    ):
        assert (await post(harness, "/users/u1/poke")).status_code == 200
        for client in (first, second):
            assert await client.receive() == {"event": "poke", "data": {"from": "http"}}
        await other.assert_no_message()


async def test_send_to_user_via_channel_only_on_subscribed_connections(harness: Any) -> None:
    async with harness.client("u1") as subscribed, harness.client("u1") as not_subscribed:
        await subscribed.subscribe("user:chat.u1")
        await User("u1").send_socket_channel_event(UserChat, "user:chat.u1", "note", {"n": 1})
        assert await subscribed.receive() == {
            "event": "note",
            "channel": "user:chat.u1",
            "data": {"n": 1},
        }
        await not_subscribed.assert_no_message()


async def test_send_to_user_with_no_connection_is_a_no_op(harness: Any) -> None:
    await harness.server.send_to_user("nobody", "poke")


async def test_disconnect_user_sends_a_reason_and_closes(harness: Any) -> None:
    async with harness.client("u1") as first, harness.client("u2") as other:
        await harness.server.disconnect_user("u1", "banned")
        assert await first.receive() == {"event": "disconnect", "data": {"reason": "banned"}}
        assert await first.receive_closed() == (1000, "banned")
        await other.assert_no_message()


async def test_connection_disconnect(harness: Any) -> None:
    async with harness.client("u1") as client:
        (connection,) = harness.server.connections
        await connection.send("first")
        await connection.disconnect("bye")
        assert (await client.receive()).event == "first"
        assert (await client.receive()).data == {"reason": "bye"}
        assert await client.receive_closed() == (1000, "bye")
        assert not connection.is_open


@pytest.mark.parametrize(
    ("listener", "channel_name"),
    [
        (GlobalChat, "other"),
        (UserChat, "user:chat.1:2"),
        ("user:chat.*", "user:chat."),
        (UserChat, "user:chat.*"),
        (UserChat, "user:chat.a b"),
    ],
)
async def test_broadcast_to_a_channel_the_listener_does_not_serve_fails(
    harness: Any, listener: Any, channel_name: str
) -> None:
    with pytest.raises(InvalidChannel):
        await harness.server.broadcast(listener, channel_name, "message", {})


async def test_broadcast_by_pattern_string_and_listener_instance(harness: Any) -> None:
    async with harness.client("u1") as client:
        await client.subscribe("user:chat.9")
        await harness.server.broadcast("user:chat.*", "user:chat.9", "a")
        await harness.server.broadcast(UserChat(), "user:chat.9", "b")
        assert [(await client.receive()).event for _ in range(2)] == ["a", "b"]


async def test_send_to_channel_refuses_unsubscribed_channels(harness: Any) -> None:
    async with harness.client("u1") as client:
        (connection,) = harness.server.connections
        assert await connection.send_to_channel("global-chat", "x") is False
        await client.assert_no_message()


async def test_broadcast_without_a_listener_finds_the_one_serving_the_channel(
    harness: Any,
) -> None:
    async with harness.client("u1") as client:
        await client.subscribe("user:chat.9")
        await client.subscribe("global-chat")
        assert await harness.server.broadcast("user:chat.9", "note", {"n": 1}) is None
        await harness.server.broadcast("global-chat", "ping")
        assert await client.receive() == {
            "event": "note",
            "channel": "user:chat.9",
            "data": {"n": 1},
        }
        assert await client.receive() == {"event": "ping", "channel": "global-chat", "data": None}


@pytest.mark.parametrize("channel_name", ["nobody-serves-this", "user:chat.1:2", "bad name"])
async def test_broadcast_without_a_listener_to_an_unserved_channel_fails(
    harness: Any, channel_name: str
) -> None:
    with pytest.raises(InvalidChannel):
        await harness.server.broadcast(channel_name, "message", {})


async def test_broadcast_by_exact_pattern_string_needs_the_four_argument_form(
    harness: Any,
) -> None:
    async with harness.client("u1") as client:
        await client.subscribe("global-chat")
        await harness.server.broadcast("global-chat", "global-chat", "message", "hi")
        assert await client.receive() == {
            "event": "message",
            "channel": "global-chat",
            "data": "hi",
        }


@pytest.mark.parametrize("arguments", [(), ("global-chat",), ("a", "b", "c", "d", "e")])
async def test_broadcast_with_arguments_of_neither_form_is_a_type_error(
    harness: Any, arguments: tuple[Any, ...]
) -> None:
    with pytest.raises(TypeError, match="broadcast takes"):
        await harness.server.broadcast(*arguments)


async def test_an_injected_server_broadcasts_without_naming_the_listener(start: Start) -> None:
    @channel("room.*")
    class Room(ChannelListener):
        def __init__(self, server: SocketServer) -> None:
            self.server = server

        @channel.on("say")
        async def say(self, data: str) -> None:
            await self.server.broadcast(self.channel_name, "said", data)

    harness = await start(listeners=[Room])
    async with harness.client("u1") as client:
        await client.subscribe("room.1")
        await client.emit("say", "hello", channel="room.1")
        assert await client.receive() == {"event": "said", "channel": "room.1", "data": "hello"}
