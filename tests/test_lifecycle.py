"""Start-up checks, refusals at the handshake, shutdown, and running without an app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from starlette.requests import HTTPConnection

from fastapi_channels import (
    ChannelListener,
    Channels,
    ChannelsError,
    ConfigurationError,
    Inject,
    Middleware,
    MiddlewareContext,
    SocketConnection,
    SocketListener,
    SocketPacket,
    SocketServer,
    channel,
    listener,
)
from fastapi_channels.app.middleware import CallNext
from fastapi_channels.testing import SocketTestClient, lifespan
from tests.conftest import Start


@channel("lobby")
class Lobby(ChannelListener):
    pass


async def refused(app: Any, **options: Any) -> tuple[dict[str, Any], tuple[int, str]]:
    client = SocketTestClient(app, **options)
    first = await client.connect()
    return dict(first), await client.receive_closed()


def deny_401(connection: HTTPConnection) -> None:
    raise HTTPException(401, "bad token: secret detail")


def broken(connection: HTTPConnection) -> None:
    raise RuntimeError("database down")


@pytest.mark.parametrize(
    ("dependency", "reason"),
    [(deny_401, "unauthorised"), (broken, "connection refused")],
    ids=["http-401", "crash"],
)
async def test_a_failing_user_dependency_is_an_envuso_refusal(
    start: Start, dependency: Any, reason: str
) -> None:
    harness = await start(user=dependency, listeners=[Lobby])
    first, closed = await refused(harness.app, subprotocols=["some-token"])
    assert first == {"event": "disconnect", "data": {"reason": reason}}
    assert closed == (1000, reason)


async def test_the_offered_subprotocol_is_echoed_even_on_refusal(start: Start) -> None:
    harness = await start(user=deny_401)
    client = SocketTestClient(harness.app, subprotocols=["the-token"])
    await client.connect()
    assert client.subprotocol == "the-token"


async def test_anonymous_connections_can_be_refused(start: Start) -> None:
    harness = await start(allow_anonymous=False)
    first, closed = await refused(harness.app)
    assert first["data"] == {"reason": "authentication required"}
    assert closed == (1000, "authentication required")
    async with harness.client("someone") as client:
        assert client.ready is not None


class Crashing(Middleware):
    async def connect(self, context: MiddlewareContext, call_next: CallNext) -> None:
        raise RuntimeError("bug")


async def test_a_crashing_connect_middleware_is_a_refusal(start: Start) -> None:
    harness = await start(middleware=[Crashing()])
    first, _ = await refused(harness.app)
    assert first["data"] == {"reason": "connection refused"}
    assert harness.server.connections == []


events: list[str] = []


async def user_with_cleanup(connection: HTTPConnection) -> AsyncIterator[str]:
    events.append("open")
    yield "u1"
    events.append("cleanup")


async def test_a_yield_dependency_lives_as_long_as_the_connection(start: Start) -> None:
    events.clear()
    harness = await start(user=user_with_cleanup)
    async with SocketTestClient(harness.app):
        assert events == ["open"]
        assert [c.user for c in harness.server.connections] == ["u1"]
    assert events == ["open", "cleanup"]


async def test_shutdown_disconnects_everyone_with_1012() -> None:
    channels = Channels(listeners=[Lobby])
    app = FastAPI()
    app.include_router(channels.router)
    async with lifespan(app):
        client = SocketTestClient(app)
        await client.expect_ready()
        await client.subscribe("lobby")
        async with lifespan(FastAPI()):  # an unrelated app does not interfere
            pass
    packet = await client.receive()
    assert packet.event == "disconnect"
    assert packet.data["reason"] == "server shutting down"
    assert 0 <= packet.data["reconnect_after"] <= 10
    assert await client.receive_closed() == (1012, "server shutting down")


async def test_channels_runs_without_an_app() -> None:
    async with Channels(listeners=[Lobby]) as channels:
        assert channels.running
        await channels.server.broadcast(Lobby, "lobby", "nobody-listens")
        with pytest.raises(ConfigurationError, match="before the server starts"):
            channels.register(Lobby)
    assert not channels.running


async def test_inject_outside_a_running_server_says_what_to_do() -> None:
    app = FastAPI()
    received: list[Any] = []

    @app.get("/")
    async def route(server: SocketServer = Inject(SocketServer)) -> None:
        received.append(server)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        with pytest.raises(ChannelsError, match="not running"):
            await http.get("/")


def test_disabled_channels_have_no_websocket_route() -> None:
    channels = Channels(enabled=False)
    assert [r for r in channels.router.routes if getattr(r, "name", "") == "fastapi_channels"] == []


async def test_discovery_registers_every_listener_of_a_package(start: Start) -> None:
    harness = await start(discover="tests.discovered")
    async with harness.client("a") as client:
        assert (await client.subscribe("lobby"))["successful"]
        await client.emit("hello")
        assert (await client.receive()).event == "hello-back"


class Unbuildable:
    def __init__(self, missing: int) -> None:
        raise RuntimeError("no")


@channel("needs")
class Needs(ChannelListener):
    def __init__(self, thing: Unbuildable) -> None:
        self.thing = thing


async def test_a_listener_the_container_cannot_build_fails_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match="cannot build Needs"):
        async with Channels(listeners=[Needs]):
            pass


def test_registration_errors() -> None:
    class Undecorated(ChannelListener):
        pass

    with pytest.raises(ConfigurationError, match="not decorated"):
        Channels(listeners=[Undecorated])
    with pytest.raises(ConfigurationError, match="not a ChannelListener"):
        Channels(listeners=[int])  # type: ignore[list-item]

    @listener("x")
    class One(SocketListener):
        async def handle(self, connection: Any, user: Any, packet: Any) -> None: ...

    @listener("x")
    class Two(SocketListener):
        async def handle(self, connection: Any, user: Any, packet: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="two listeners"):
        Channels(listeners=[One, Two])

    @channel("a.*")
    class A(ChannelListener):
        pass

    @channel("*.b")
    class B(ChannelListener):
        pass

    with pytest.raises(ConfigurationError, match="ambiguous"):
        Channels(listeners=[A, B])


def test_handler_declaration_errors() -> None:
    with pytest.raises(ConfigurationError, match="reserved"):

        @channel("r")
        class Reserved(ChannelListener):
            @channel.on("subscribe-channel-request")
            async def h(self, connection: Any, user: Any, packet: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="async"):

        @channel("s")
        class Sync(ChannelListener):
            @channel.on("x")
            def h(self, connection: Any, user: Any, packet: Any) -> None: ...

    with pytest.raises(ConfigurationError, match=r"\(self, connection, user, packet\)"):

        @channel("t")
        class Arity(ChannelListener):
            @channel.on("x")
            async def h(self, connection: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="two handlers"):

        @channel("u")
        class Twice(ChannelListener):
            @channel.on("x")
            async def h1(self, connection: Any, user: Any, packet: Any) -> None: ...

            @channel.on("x")
            async def h2(self, connection: Any, user: Any, packet: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="must define handle"):

        @listener("y")
        class NoHandle(SocketListener):
            pass


def test_user_key_rules() -> None:
    channels = Channels()

    class WithId:
        id = 42

    assert channels.user_key(None) is None
    assert channels.user_key(WithId()) == "42"
    assert channels.user_key({"sub": "s"}) == "s"
    assert channels.user_key("name") == "name"
    with pytest.raises(ConfigurationError, match="user_id="):
        channels.user_key(object())
    assert Channels(user_id=lambda u: u["uid"]).user_key({"uid": 5}) == "5"


async def test_a_user_without_an_id_is_refused_with_a_log(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    harness = await start(user=lambda: object())
    first, _ = await refused(harness.app)
    assert first["data"] == {"reason": "connection refused"}
    assert "user_id=" in caplog.text


async def test_connection_send_after_close_raises(start: Start) -> None:
    harness = await start()
    async with harness.client("a"):
        (connection,) = harness.server.connections
    assert isinstance(connection, SocketConnection)
    from fastapi_channels import ConnectionClosed

    with pytest.raises(ConnectionClosed):
        await connection.send("x")


_ = SocketPacket
