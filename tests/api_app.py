"""An app with the HTTP API on, for the API tests: in-process and in uvicorn subprocesses.

Its broker comes from ``FASTAPI_CHANNELS_BROKER_URL`` (memory by default); the API key is
``API_KEY`` (``test-key`` by default); a connection's user is the ``?user=`` query parameter.
``room:*`` is a plain channel, ``lobby:*`` a presence channel with a history.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from fastapi_channels import Broker, ChannelListener, Channels, History, SocketServer, channel
from fastapi_channels import api_key as api_key_guard

API_KEY = os.environ.get("API_KEY", "test-key")


@channel("room:*")
class Room(ChannelListener):
    @channel.on("say")
    async def say(self, data: Any) -> None:
        await self.broadcast(self.channel_name, "said", data)


@channel("lobby:*")
class Lobby(ChannelListener):
    presence = True
    history = History(size=50)


def user_from_query(connection: HTTPConnection) -> str | None:
    return connection.query_params.get("user")


def create_app(broker: Broker | str | None = None) -> FastAPI:
    channels = Channels(
        user=user_from_query,
        listeners=[Room, Lobby],
        broker=broker,
        api_guard=api_key_guard(API_KEY),
    )
    app = FastAPI(title="api test app")
    app.include_router(channels.router)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        server: SocketServer = channels.server
        return server.health()

    return app


app = create_app()
