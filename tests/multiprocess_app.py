"""The app the multi-process tests run in several uvicorn processes on one Redis.

Its broker comes from ``FASTAPI_CHANNELS_BROKER_URL``, as in a deployment; a connection's user is
the ``?user=`` query parameter. Handlers of ``say`` broadcast to everyone but the sender; a
restart spreads reconnections over ``RECONNECT_SPREAD`` seconds (10 by default). The HTTP routes
send from whichever process serves them, and answer 503 when Redis could not take the message
(local subscribers got it anyway, except on a history channel). ``lobby:*`` channels are presence
channels with a history; the presence timeout is ``PRESENCE_TIMEOUT`` seconds (30 by default).
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
    Limits,
    SocketConnection,
    SocketPacket,
    SocketServer,
    channel,
)


@channel("room:*")
class Room(ChannelListener):
    @channel.on("say")
    async def say(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        assert packet.channel is not None
        await self.broadcast(packet.channel, "message", packet.data, exclude=connection)


@channel("lobby:*")
class Lobby(ChannelListener):
    presence = True
    history = History(size=50)

    @channel.on("say")
    async def say(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        assert packet.channel is not None
        await self.broadcast(packet.channel, "message", packet.data, exclude=connection)


def user_from_query(connection: HTTPConnection) -> str | None:
    return connection.query_params.get("user")


channels = Channels(
    user=user_from_query,
    listeners=[Room, Lobby],
    presence_timeout=float(os.environ.get("PRESENCE_TIMEOUT", "30")),
    limits=Limits(reconnect_spread=float(os.environ.get("RECONNECT_SPREAD", "10"))),
)
app = FastAPI()
app.include_router(channels.router)


async def sent(sending: Awaitable[None]) -> JSONResponse:
    try:
        await sending
    except BrokerError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    return JSONResponse({})


@app.post("/rooms/{room}")
async def broadcast(
    room: str,
    body: dict[str, Any],
    exclude: str | None = None,
    server: SocketServer = Inject(SocketServer),
) -> JSONResponse:
    return await sent(server.broadcast(Room, f"room:{room}", "message", body, exclude=exclude))


@app.post("/users/{user}/subscribe/{name}")
async def subscribe_user(
    user: str, name: str, server: SocketServer = Inject(SocketServer)
) -> JSONResponse:
    return await sent(server.subscribe_user(user, name))


@app.post("/users/{user}/unsubscribe/{name}")
async def unsubscribe_user(
    user: str, name: str, server: SocketServer = Inject(SocketServer)
) -> JSONResponse:
    return await sent(server.unsubscribe_user(user, name))


@app.post("/lobbies/{lobby}")
async def post_to_lobby(
    lobby: str, body: dict[str, Any], server: SocketServer = Inject(SocketServer)
) -> JSONResponse:
    return await sent(server.broadcast(Lobby, f"lobby:{lobby}", "message", body))


@app.post("/users/{user}/poke")
async def poke(user: str, server: SocketServer = Inject(SocketServer)) -> JSONResponse:
    return await sent(server.send_to_user(user, "poke", {"from": "http"}))


@app.post("/users/{user}/disconnect")
async def disconnect(user: str, server: SocketServer = Inject(SocketServer)) -> JSONResponse:
    return await sent(server.disconnect_user(user, "bye"))


@app.get("/health")
async def health(server: SocketServer = Inject(SocketServer)) -> dict[str, Any]:
    return server.health()
