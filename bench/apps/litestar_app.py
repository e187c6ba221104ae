"""litestar's channels plugin: a subscriber per connection, ``publish`` once per broadcast.

Shaped as the plugin's documentation and its own generated handler: the handler is given the
``ChannelsPlugin``, enters ``start_subscription`` on a subscribe request and sends the
subscriber's events from ``run_in_background(socket.send_text)`` while it reads the socket until
it closes; a broadcast is one ``channels.publish`` of the frame's text. The backend is
``MemoryChannelsBackend``, or with ``BENCH_BROKER`` ``RedisChannelsPubSubBackend`` (the one
without history, which none of these runs uses). Each subscriber's backlog is bounded at 1000
events (``subscriber_max_backlog``), the per-connection queue bound of fastapi_channels. The
JWT comes from the subprotocol through a dependency, as for every server here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, WebSocket, websocket
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.base import ChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException

from bench.common import EVENT, ROOM, Bench, payload, redis_broker, with_controls
from bench.envuso import READY, channel_event, encode, requested_channel, subscribed, user


def backend(broker: tuple[str, str] | None) -> ChannelsBackend:
    if broker is None:
        return MemoryChannelsBackend()
    from litestar.channels.backends.redis import RedisChannelsPubSubBackend
    from redis.asyncio import Redis

    return RedisChannelsPubSubBackend(redis=Redis.from_url(broker[0]))


broker = redis_broker()
prefix = f"{broker[1]}:" if broker else ""
"""Channel names are prefixed as the driver asks (the Pub/Sub backend publishes them as they
are, and other runs may share the Redis server); clients still ask for ``bench``."""

channels = ChannelsPlugin(
    backend=backend(broker), channels=[prefix + ROOM], subscriber_max_backlog=1000
)
members: set[WebSocket[Any, Any, Any]] = set()


async def jwt_user(socket: WebSocket[Any, Any, Any]) -> dict[str, Any]:
    claims = user(socket.headers.get("sec-websocket-protocol", ""))
    if claims is None:
        raise NotAuthorizedException()
    return claims


@websocket("/ws", dependencies={"claims": Provide(jwt_user)})
async def room(
    socket: WebSocket[Any, Any, Any], channels: ChannelsPlugin, claims: dict[str, Any]
) -> None:
    await socket.accept(subprotocols=socket.headers.get("sec-websocket-protocol"))
    await socket.send_text(READY)
    channel = requested_channel(await socket.receive_json())
    if channel is None:
        await socket.close()
        return
    async with channels.start_subscription(prefix + channel) as subscriber:
        members.add(socket)
        try:
            await socket.send_text(encode(subscribed(channel)))
            async with subscriber.run_in_background(socket.send_text):
                while (await socket.receive())["type"] != "websocket.disconnect":
                    continue
        finally:
            members.discard(socket)


async def broadcast(seq: int) -> None:
    channels.publish(encode(channel_event(ROOM, EVENT, payload(seq))), prefix + ROOM)


bench = Bench(broadcast, lambda: len(members))


@asynccontextmanager
async def running(app: Litestar) -> AsyncIterator[None]:
    async with bench.running():
        yield


peer = Litestar(route_handlers=[room], plugins=[channels], lifespan=[running])
app = with_controls(peer, bench)
