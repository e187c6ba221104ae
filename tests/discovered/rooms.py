from __future__ import annotations

from typing import Any

from fastapi_channels import (
    ChannelListener,
    SocketConnection,
    SocketListener,
    SocketPacket,
    channel,
    listener,
)


@channel("lobby")
class Lobby(ChannelListener):
    pass


@listener("hello")
class Hello(SocketListener):
    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await connection.send("hello-back")


class NotAListener:
    pattern = "ignored"
