"""The app the several-hosts test runs, two processes per host, on one Redis across a network.

Its Redis URL is ``FASTAPI_CHANNELS_BROKER_URL`` (the Redis host's address); ``PING_INTERVAL``
sets the broker's ``ping_interval`` and ``PRESENCE_TIMEOUT`` the presence timeout, both short
so that a cut network is noticed within seconds. A connection's user is the ``?user=`` query
parameter. ``room:*`` channels are plain; ``lobby:*`` channels have presence and a history long
enough to hold everything a test publishes while a host is cut off. The HTTP routes broadcast
from whichever process serves them and answer 503 when Redis could not take the message.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from fastapi_channels import (
    BrokerError,
    ChannelListener,
    Channels,
    History,
    Inject,
    SocketServer,
    channel,
)
from fastapi_channels.brokers.redis import RedisBroker


@channel("room:*")
class Room(ChannelListener):
    pass


@channel("lobby:*")
class Lobby(ChannelListener):
    presence = True
    history = History(size=5000)


def user_from_query(connection: HTTPConnection) -> str | None:
    return connection.query_params.get("user")


channels = Channels(
    user=user_from_query,
    listeners=[Room, Lobby],
    broker=RedisBroker(
        os.environ["FASTAPI_CHANNELS_BROKER_URL"],
        ping_interval=float(os.environ["PING_INTERVAL"]),
    ),
    presence_timeout=float(os.environ["PRESENCE_TIMEOUT"]),
)
app = FastAPI()
app.include_router(channels.router)


async def sent(sending: Awaitable[Any]) -> JSONResponse:
    try:
        await sending
    except BrokerError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    return JSONResponse({})


@app.post("/rooms/{room}")
async def post_to_room(
    room: str, body: dict[str, Any], server: SocketServer = Inject(SocketServer)
) -> JSONResponse:
    return await sent(server.broadcast(Room, f"room:{room}", "message", body))


@app.post("/lobbies/{lobby}")
async def post_to_lobby(
    lobby: str, body: dict[str, Any], server: SocketServer = Inject(SocketServer)
) -> JSONResponse:
    return await sent(server.broadcast(Lobby, f"lobby:{lobby}", "message", body))
