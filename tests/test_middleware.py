"""Global and per-channel middleware: order, refusals, and the stages they wrap."""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_channels import (
    ChannelListener,
    Channels,
    ConfigurationError,
    Middleware,
    MiddlewareContext,
    Reject,
    SocketConnection,
    SocketListener,
    SocketPacket,
    channel,
    listener,
)
from fastapi_channels.app.middleware import CallNext
from tests.conftest import Start

calls: list[str] = []


class Recorder(Middleware):
    """Records every stage it wraps, before and after."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def connect(self, context: MiddlewareContext, call_next: CallNext) -> None:
        calls.append(f"{self.name}:connect")
        await call_next()

    async def subscribe(self, context: MiddlewareContext, call_next: CallNext) -> None:
        calls.append(f"{self.name}:subscribe:{context.channel}:{context.wildcard}")
        await call_next()
        calls.append(f"{self.name}:subscribed")

    async def event(self, context: MiddlewareContext, call_next: CallNext) -> None:
        assert context.packet is not None
        calls.append(f"{self.name}:event:{context.packet.event}")
        await call_next()


class BannedUsers(Middleware):
    async def connect(self, context: MiddlewareContext, call_next: CallNext) -> None:
        if context.user and context.user["id"] == "banned":
            raise Reject("you are banned")
        await call_next()


class ReadOnly(Middleware):
    """A per-channel middleware refusing every event but 'read'."""

    async def event(self, context: MiddlewareContext, call_next: CallNext) -> None:
        assert context.packet is not None
        if context.packet.event != "read":
            raise Reject("read-only channel")
        await call_next()


class Crashing(Middleware):
    async def subscribe(self, context: MiddlewareContext, call_next: CallNext) -> None:
        raise RuntimeError("bug")


@channel("news.*")
class News(ChannelListener):
    middleware = (Recorder("channel"), ReadOnly)

    async def is_authorised(self, connection: SocketConnection, user: Any) -> bool:
        calls.append("is_authorised")
        return self.wildcard != "secret"

    @channel.on("read")
    async def read(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        calls.append("handler")
        await connection.send("read-ok")

    @channel.on("write")
    async def write(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        raise AssertionError("middleware refuses writes")


@channel("broken")
class Broken(ChannelListener):
    middleware = (Crashing(),)


@listener("ping-me")
class PingMe(SocketListener):
    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        calls.append("plain handler")


@pytest.fixture
async def harness(start: Start) -> Any:
    calls.clear()
    return await start(
        listeners=[News, Broken, PingMe], middleware=[BannedUsers, Recorder("global")]
    )


async def test_global_middleware_wraps_connect_in_order(harness: Any) -> None:
    async with harness.client("a"):
        assert calls == ["global:connect"]


async def test_a_refused_connect_follows_the_refusal_rule(harness: Any) -> None:
    client = harness.client("banned")
    first = await client.connect()
    assert first == {"event": "disconnect", "data": {"reason": "you are banned"}}
    assert await client.receive_closed() == (1000, "you are banned")
    assert harness.server.connections == []
    assert calls == []


async def test_subscribe_runs_global_then_channel_middleware_then_is_authorised(
    harness: Any,
) -> None:
    async with harness.client("a") as client:
        calls.clear()
        assert (await client.subscribe("news.sport"))["successful"]
        assert calls == [
            "global:subscribe:news.sport:sport",
            "channel:subscribe:news.sport:sport",
            "is_authorised",
            "channel:subscribed",
            "global:subscribed",
        ]


async def test_middleware_sees_a_refusal_by_is_authorised(harness: Any) -> None:
    async with harness.client("a") as client:
        calls.clear()
        response = await client.subscribe("news.secret")
        assert response["reason"] == "not authorised"
        assert "channel:subscribed" not in calls


async def test_channel_middleware_wraps_events_and_can_reject(harness: Any) -> None:
    async with harness.client("a") as client:
        await client.subscribe("news.x")
        calls.clear()
        await client.emit("read", channel="news.x")
        assert (await client.receive()).event == "read-ok"
        assert calls == ["global:event:read", "channel:event:read", "handler"]
        await client.emit("write", channel="news.x")
        assert await client.receive() == {
            "event": "channels:error",
            "data": {
                "code": "rejected",
                "message": "read-only channel",
                "event": "write",
                "channel": "news.x",
            },
        }


async def test_global_event_middleware_wraps_plain_listeners(harness: Any) -> None:
    async with harness.client("a") as client:
        calls.clear()
        await client.emit("ping-me")
        await client.assert_no_message()
        assert calls == ["global:event:ping-me", "plain handler"]


async def test_a_crashing_middleware_refuses_with_a_generic_reason(harness: Any) -> None:
    async with harness.client("a") as client:
        assert await client.subscribe("broken") == {
            "channel": "broken",
            "successful": False,
            "reason": "subscription refused",
        }


class Blocklist:
    """An application service a middleware class asks for in its constructor."""

    def __init__(self) -> None:
        self.blocked = {"mallory"}


class BlocklistMiddleware(Middleware):
    """Takes a service without ``@inject``, as a listener class may."""

    def __init__(self, blocklist: Blocklist) -> None:
        self.blocklist = blocklist

    async def subscribe(self, context: MiddlewareContext, call_next: CallNext) -> None:
        if context.user and context.user["id"] in self.blocklist.blocked:
            raise Reject("blocked")
        await call_next()


class Unconfigured:
    """A service the application forgot to bind: building it fails."""

    def __init__(self) -> None:
        raise RuntimeError("Unconfigured must be bound to an instance")


class NeedsAnUnboundThing(Middleware):
    def __init__(self, service: Unconfigured) -> None:
        self.service = service


@pytest.mark.parametrize("where", ["global", "channel"])
async def test_a_middleware_class_gets_its_services_from_the_container(
    start: Start, where: str
) -> None:
    @channel("guarded")
    class Guarded(ChannelListener):
        middleware = [BlocklistMiddleware] if where == "channel" else []

    options: dict[str, Any] = {"listeners": [Guarded]}
    if where == "global":
        options["middleware"] = [BlocklistMiddleware]
    harness = await start(**options)
    async with harness.client("alice") as alice, harness.client("mallory") as mallory:
        assert (await alice.subscribe("guarded"))["successful"]
        refused = await mallory.subscribe("guarded")
        assert (refused["successful"], refused["reason"]) == (False, "blocked")


@pytest.mark.parametrize("where", ["global", "channel"])
async def test_a_middleware_class_the_container_cannot_build_names_itself(where: str) -> None:
    @channel("guarded")
    class Guarded(ChannelListener):
        middleware = [NeedsAnUnboundThing] if where == "channel" else []

    channels = Channels(
        listeners=[Guarded], middleware=[NeedsAnUnboundThing] if where == "global" else []
    )
    with pytest.raises(ConfigurationError, match="cannot build NeedsAnUnboundThing"):
        async with channels:
            pass
