"""A small app the tests run under other ASGI servers (hypercorn, granian) and under uvicorn.

``room`` is a channel whose ``say`` handler broadcasts the text to the room and replies with
its length; a connection's user is the ``?user=`` query parameter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.requests import HTTPConnection

from fastapi_channels import ChannelListener, Channels, SocketConnection, SocketPacket, channel


@channel("room")
class Room(ChannelListener):
    @channel.on("say")
    async def say(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> int:
        await self.broadcast(self.channel_name, "said", {"by": user, "text": packet.data})
        return len(packet.data)


def user_from_query(connection: HTTPConnection) -> str | None:
    return connection.query_params.get("user")


channels = Channels(user=user_from_query, listeners=[Room])
READY = "servers_app: channels started"


@asynccontextmanager
async def _started(app: FastAPI) -> AsyncIterator[None]:
    print(READY, flush=True)  # the tests wait for this line: the broker is running by now
    yield


app = FastAPI()
app.include_router(channels.router)
app.include_router(APIRouter(lifespan=_started))  # entered after the channels' lifespan
