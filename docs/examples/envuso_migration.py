"""An Envuso socket listener and channel, rewritten for fastapi_channels.

Envuso (TypeScript)::

    export class UserChatChannel extends SocketChannelListener {
        public middlewares() { return [new JwtAuthenticationMiddleware()]; }
        public channelName() { return "user:chat.*"; }
        public async isAuthorised(connection: SocketConnection, user: User) {
            return this.getChannelName() === `user:chat.${user._id}`;
        }
        async message(connection: SocketConnection, user: User, packet: SocketPacket) {
            this.broadcast(this.getChannelName(), "message", packet.getData());
        }
    }
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import HTTPConnection

from fastapi_channels import (
    ChannelListener,
    Channels,
    SocketConnection,
    SocketListener,
    SocketPacket,
    SocketUserMixin,
    channel,
    listener,
)


class User(SocketUserMixin):
    def __init__(self, id: str) -> None:
        self.id = id


def current_user(connection: HTTPConnection) -> User | None:
    """Stands for JwtAuthenticationMiddleware: see the authentication page for JWTAuth."""
    name = connection.query_params.get("user")
    return User(name) if name else None


@channel("user:chat.*")  # channelName()
class UserChat(ChannelListener):
    require_user = True  # what JwtAuthenticationMiddleware enforced

    async def is_authorised(self, connection: SocketConnection, user: User) -> bool:
        return self.channel_name == f"user:chat.{user.id}"  # getChannelName()

    @channel.on("message")  # Envuso called any method whose name matched the event
    async def message(self, connection: SocketConnection, user: User, packet: SocketPacket) -> None:
        await self.broadcast(self.channel_name, "message", packet.data)


@listener("typing")  # SocketListener.eventName()
class Typing(SocketListener):
    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await connection.send("typing-ack", packet.data)


channels = Channels(user=current_user, listeners=[UserChat, Typing])
app = FastAPI()
app.include_router(channels.router)


async def check() -> None:
    """What the page promises: the same packets an Envuso front end exchanged."""
    from fastapi_channels.testing import SocketTestClient, lifespan

    async with lifespan(app), SocketTestClient(app, query_string="user=7") as client:
        assert (await client.subscribe("user:chat.7"))["successful"]
        assert not (await client.subscribe("user:chat.8"))["successful"]
        await client.emit("message", {"text": "hi"}, channel="user:chat.7")
        assert await client.receive() == {
            "event": "message",
            "channel": "user:chat.7",
            "data": {"text": "hi"},
        }
        await User("7").send_socket_event("notification", {"n": 1})  # user.sendSocketEvent
        assert (await client.receive()).event == "notification"
