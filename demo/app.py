"""The README example as a runnable app: ``uvicorn demo.app:app``.

A connection's user comes from the token the client offers as its websocket subprotocol (as the
Envuso client does). In this demo the token is simply the user's name.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from fastapi_channels import (
    ChannelListener,
    Channels,
    Inject,
    SocketConnection,
    SocketListener,
    SocketPacket,
    SocketServer,
    SocketUserMixin,
    channel,
    listener,
)


class User(SocketUserMixin):
    def __init__(self, id: str) -> None:
        self.id = id


class UserService:
    """Stands for the app's own user store; the container gives it to listeners."""

    def find(self, name: str) -> User:
        return User(name)


def get_current_user(connection: HTTPConnection) -> User | None:
    token = connection.headers.get("sec-websocket-protocol", "").split(",")[0].strip()
    return User(token) if token and token not in ("null", "undefined") else None


# --8<-- [start:listeners]
@channel("user:chat.*")
class UserChat(ChannelListener):
    def __init__(self, users: UserService) -> None:
        self.users = users

    async def is_authorised(self, connection: SocketConnection, user: User | None) -> bool:
        return user is not None and self.wildcard == str(user.id)

    @channel.on("message")
    async def message(self, connection: SocketConnection, user: User, packet: SocketPacket) -> None:
        await self.broadcast(self.channel_name, "message", {"text": packet.data["text"]})

    @channel.on("deleted-message")
    async def deleted(self, connection: SocketConnection, user: User, packet: SocketPacket) -> None:
        await self.broadcast(self.channel_name, "deleted-message", packet.data)


@channel("global-chat")
class GlobalChat(ChannelListener):
    @channel.on("message")
    async def message(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        sender = user.id if user else "anonymous"
        await self.broadcast(
            "global-chat", "message", {"from": sender, "text": packet.data["text"]}
        )


@listener("typing")
class Typing(SocketListener):
    def __init__(self, server: SocketServer) -> None:
        self.server = server

    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        if user is not None:
            await self.server.broadcast(GlobalChat, "global-chat", "typing", {"from": user.id})


class Announcement(BaseModel):
    text: str


channels = Channels(user=get_current_user, listeners=[UserChat, GlobalChat, Typing])
app = FastAPI(title="fastapi_channels demo")
app.include_router(channels.router)


@app.post("/announce")
async def announce(body: Announcement, server: SocketServer = Inject(SocketServer)) -> None:
    await server.broadcast(GlobalChat, "global-chat", "message", body.model_dump())


# --8<-- [end:listeners]
