"""Django Channels: an ``AsyncJsonWebsocketConsumer`` in a group, ``group_send`` to broadcast.

Shaped as the Channels tutorial and its "Custom Authentication" page show it: a middleware puts
the user in the scope (here from the JWT the client offers as its subprotocol), the consumer
joins the group with ``group_add`` on a subscribe request and leaves it on disconnect, and a
broadcast is one ``group_send`` of the data, which each consumer's handler encodes and sends.
The channel layer is the in-memory one, or with ``BENCH_BROKER`` the ``RedisChannelLayer`` of
``channels_redis`` (the layer its documentation sets up; its Pub/Sub layer is marked beta).
Both layers bound each consumer's channel at ``capacity`` messages and drop the rest: it is set
to 1000, the per-connection queue bound of fastapi_channels, since the default of 100 loses
deliveries in the flood runs. The settings are the few that Channels reads, set in code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import django
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.middleware import BaseMiddleware
from channels.routing import ProtocolTypeRouter, URLRouter
from django.conf import settings
from django.urls import path

from bench.common import EVENT, ROOM, Bench, control_app, payload, redis_broker
from bench.envuso import READY, channel_event, requested_channel, subscribed, user

CAPACITY = 1000
MAX_CONNECTIONS = 2048


def channel_layer() -> dict[str, Any]:
    broker = redis_broker()
    if broker is None:
        return {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": CAPACITY}}
    url, prefix = broker
    # redis-py 8 bounds a pool at 100 connections and raises beyond (it used to be unbounded);
    # the layer takes one per call, so 500 clients leaving at once would fail their
    # ``group_discard``. Room for every subscriber of the largest run:
    host = {"address": url, "max_connections": MAX_CONNECTIONS}
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [host], "prefix": prefix, "capacity": CAPACITY},
    }


# Before any model or layer is used (this app has no models, so imports may come first).
settings.configure(CHANNEL_LAYERS={"default": channel_layer()})
django.setup()

members: set[str] = set()
"""The channel names of this process's consumers in the room, for ``/bench/stats``."""


class JWTAuthMiddleware(BaseMiddleware):
    """Puts the claims of the offered token in ``scope["user"]`` (None when it is invalid)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        offered = scope.get("subprotocols") or [""]
        return await super().__call__({**scope, "user": user(offered[0])}, receive, send)


class RoomConsumer(AsyncJsonWebsocketConsumer):
    joined: tuple[str, ...] = ()

    async def connect(self) -> None:
        if self.scope["user"] is None:
            await self.close()  # before accepting: the handshake is refused
            return
        await self.accept(subprotocol=self.scope["subprotocols"][0])
        await self.send(text_data=READY)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        channel = requested_channel(content)
        if channel is None:
            return
        await self.channel_layer.group_add(channel, self.channel_name)
        self.joined = (*self.joined, channel)
        members.add(self.channel_name)
        await self.send_json(subscribed(channel))

    async def disconnect(self, code: int) -> None:
        for channel in self.joined:
            await self.channel_layer.group_discard(channel, self.channel_name)
        members.discard(self.channel_name)

    async def bench_tick(self, message: dict[str, Any]) -> None:
        """The handler of the group's ``bench.tick`` messages."""
        await self.send_json(channel_event(ROOM, EVENT, message["data"]))


async def broadcast(seq: int) -> None:
    await get_channel_layer().group_send(ROOM, {"type": "bench.tick", "data": payload(seq)})


bench = Bench(broadcast, lambda: len(members))


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    async with bench.running():
        yield


controls = control_app(bench, lifespan)
app = ProtocolTypeRouter(
    {
        "http": controls,
        "lifespan": controls,
        "websocket": JWTAuthMiddleware(URLRouter([path("ws", RoomConsumer.as_asgi())])),
    }
)
