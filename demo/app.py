"""The README example as a runnable app: ``uvicorn demo.app:app``.

On several processes: ``FASTAPI_CHANNELS_BROKER_URL=redis://127.0.0.1:6379/0 uvicorn demo.app:app
--workers 4`` (see the deployment page of the docs).

A connection's user comes from the token the client offers as its websocket subprotocol (as the
Envuso client does). In this demo the token is simply the user's name.

Handlers take typed events: the packet's data arrives validated into a pydantic model (invalid
data is answered with an ``invalid-data`` error and the handler does not run), and what a
handler returns is the reply to a packet that carries an ``id``. The AsyncAPI document of these
channels is served at ``/ws/asyncapi.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

from fastapi_channels import (
    ChannelListener,
    Channels,
    History,
    Inject,
    SocketConnection,
    SocketListener,
    SocketServer,
    SocketUserMixin,
    channel,
    listener,
)
from fastapi_channels.history import position_data


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
class Message(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class ChatLine(BaseModel):
    text: str
    from_: str = Field(serialization_alias="from")


class Deleted(BaseModel):
    id: int


class Posted(BaseModel):
    """The reply to a ``message`` packet sent with an ``id``."""

    delivered: bool = True


@channel("user:chat.*")
class UserChat(ChannelListener):
    """A user's private channel: only that user may subscribe."""

    sends = {"message": Message, "deleted-message": Deleted}

    def __init__(self, users: UserService) -> None:
        self.users = users

    async def is_authorised(self, connection: SocketConnection, user: User | None) -> bool:
        return user is not None and self.wildcard == str(user.id)

    @channel.on("message")
    async def message(self, message: Message) -> Posted:
        """Post a note to yourself."""
        await self.broadcast(self.channel_name, "message", message)
        return Posted()

    @channel.on("deleted-message")
    async def deleted(self, deleted: Deleted) -> None:
        await self.broadcast(self.channel_name, "deleted-message", deleted)


@channel("global-chat")
class GlobalChat(ChannelListener):
    """Everyone's chat room: who is online, and the last 100 lines of the day for whoever
    reconnects (typing indicators are not kept)."""

    sends = {"message": ChatLine, "typing": dict[str, str]}
    presence = True
    history = History(size=100, ttl=24 * 3600, events={"message"})

    def member_info(self, connection: SocketConnection, user: User) -> dict[str, str]:
        return {"id": str(user.id), "name": str(user.id).title()}

    @channel.on("message")
    async def message(self, message: Message, user: User | None) -> Posted:
        """Say something to everyone."""
        sender = user.id if user else "anonymous"
        line = ChatLine(text=message.text, from_=sender).model_dump(by_alias=True)
        await self.broadcast("global-chat", "message", line)
        return Posted()


@listener("typing")
class Typing(SocketListener):
    """Tell the global chat that you are typing."""

    def __init__(self, server: SocketServer) -> None:
        self.server = server

    async def handle(self, user: User | None) -> None:
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


@app.get("/chat/online")
async def online(server: SocketServer = Inject(SocketServer)) -> list[dict[str, Any]]:
    """Who is in the global chat, on every process."""
    return await server.presence("global-chat")


@app.get("/chat/history")
async def recent(limit: int = 20, server: SocketServer = Inject(SocketServer)) -> dict[str, Any]:
    """The global chat's last lines, with their positions."""
    page = await server.history("global-chat", limit=limit)
    return {
        "position": position_data(page.position),
        "messages": [
            {"position": position_data(m.position), "event": m.event, "data": m.data}
            for m in page.messages
        ],
    }


# --8<-- [end:listeners]


# --8<-- [start:health]
@app.get("/health")
async def health(server: SocketServer = Inject(SocketServer)) -> dict[str, Any]:
    """This process's state, and whether its broker reaches the other processes."""
    return server.health()


# --8<-- [end:health]


@app.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The chat page; it imports the JavaScript client from ``/ws/client.js``."""
    return FileResponse(Path(__file__).with_name("index.html"))
