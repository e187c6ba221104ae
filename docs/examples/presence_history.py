"""The samples of docs/presence-and-history.md, and the history samples of docs/clients.md.

The Node tests serve this app (`clients/js/support/server.py --app`) for the JavaScript samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from fastapi_channels import Channels, Position, SocketServer
from fastapi_channels.client import Channel, ChannelsClient


@dataclass
class User:
    id: str
    display_name: str


def current_user(connection: HTTPConnection) -> User | None:
    """Stands for real authentication (see docs/authentication.md): `?token=<name>`."""
    name = connection.query_params.get("token")
    return User(name, name.title()) if name else None


class Message(BaseModel):
    text: str


# --8<-- [start:room]
from fastapi_channels import ChannelListener, History, SocketConnection, channel


@channel("room:*")
class Room(ChannelListener):
    presence = True
    history = History(size=100, ttl=3600, events={"message"})  # typing is not kept

    def member_info(self, connection: SocketConnection, user: User) -> dict[str, str]:
        return {"id": str(user.id), "name": user.display_name}  # public: every subscriber sees it

    @channel.on("message")
    async def message(self, message: Message, user: User) -> None:
        line = {"from": user.id, **message.model_dump()}
        await self.broadcast(self.channel_name, "message", line)

    @channel.on("typing")
    async def typing(self, user: User) -> None:
        await self.broadcast(self.channel_name, "typing", {"from": user.id})


# --8<-- [end:room]


# --8<-- [start:bounded]
@channel("dm:*")
class Direct(ChannelListener):
    history = History(size=50, ttl=24 * 3600, max_channels=10_000)


# --8<-- [end:bounded]

channels = Channels(user=current_user, listeners=[Room])
app = FastAPI()
app.include_router(channels.router)


async def who_is_there(server: SocketServer) -> tuple[list[dict[str, str]], int]:
    # --8<-- [start:presence]
    members = await server.presence("room:1")  # [{"id": "ann", "name": "Ann"}, ...]
    count = await server.presence_count("room:1")  # users, not connections
    # --8<-- [end:presence]
    return members, count


async def read_history(server: SocketServer, position: Position) -> list[object]:
    # --8<-- [start:history]
    page = await server.history("room:1", limit=20)  # the newest 20, oldest first
    first = page.messages[0]  # first.position, first.event, first.data
    latest = page.position  # the channel's latest position

    page = await server.history("room:1", since=position, limit=50)  # the next 50 after it
    recovered = page.recovered  # False: since is too old, or another epoch
    # --8<-- [end:history]
    return [first, latest, page, recovered]


async def resume(client: ChannelsClient, kept_position: Position) -> Channel:
    # --8<-- [start:client]
    chat = await client.subscribe("room:1", since=kept_position)  # a Position, e.g. from a file
    if chat.recovered is False:  # True, False, or None when no position was sent
        ...  # reload what the channel's events build, then go on from chat.position
    # --8<-- [end:client]
    return chat


def two_processes() -> tuple[Channels, Channels]:
    # --8<-- [start:hub]
    from fastapi_channels.brokers import MemoryBroker, MemoryHub

    hub = MemoryHub()
    first = Channels(user=current_user, listeners=[Room], broker=MemoryBroker(hub))
    second = Channels(user=current_user, listeners=[Room], broker=MemoryBroker(hub))  # "another"
    # --8<-- [end:hub]
    return first, second


async def check() -> None:
    """Presence and history as the page says, in-process, on two 'processes' and a real server."""
    from fastapi_channels.testing import SocketTestClient, lifespan
    from fastapi_channels.wire.history import StoredMessage
    from tests.live import live_server

    async with (
        lifespan(app),
        SocketTestClient(app, query_string="token=ann") as ann,
        SocketTestClient(app, query_string="token=bob") as bob,
    ):
        assert (await ann.subscribe("room:1"))["successful"]
        assert (await ann.receive()).data == {
            "channel": "room:1",
            "members": [{"id": "ann", "name": "Ann"}],
        }
        assert (await bob.subscribe("room:1"))["successful"]
        assert (await bob.receive()).event == "channels:presence"
        joined = await ann.receive()
        assert joined.event == "channels:join" and joined.data["member"]["id"] == "bob"
        assert await who_is_there(channels.server) == (
            [{"id": "ann", "name": "Ann"}, {"id": "bob", "name": "Bob"}],
            2,
        )

        await ann.emit("typing", channel="room:1")  # not kept: no position
        assert "position" not in await bob.receive()
        await ann.emit("message", {"text": "one"}, channel="room:1")
        first = await bob.receive()
        await ann.emit("message", {"text": "two"}, channel="room:1")
        second = await bob.receive()
        assert second["position"]["offset"] == first["position"]["offset"] + 1
        kept = Position(first["position"]["offset"], first["position"]["epoch"])
        oldest, latest, page, recovered = await read_history(channels.server, kept)
        assert isinstance(oldest, StoredMessage) and oldest.data == {"from": "ann", "text": "one"}
        assert latest == Position(second["position"]["offset"], second["position"]["epoch"])
        assert recovered is True and [m.data["text"] for m in page.messages] == ["two"]

    async with live_server(app) as host:
        url = f"ws://{host}/ws"
        async with ChannelsClient(url, token="ann", token_transport="query") as client:
            chat = await client.subscribe("room:1")
            assert chat.recovered is None and chat.position is not None
            start = chat.position
            await chat.emit("message", {"text": "while you were away"})
        async with (
            ChannelsClient(url, token="bob", token_transport="query") as client,
            client.packets("message") as missed,
        ):
            chat = await resume(client, start)
            assert chat.recovered is True
            assert (await missed.get(timeout=5)).data["text"] == "while you were away"

    bounded = History(size=50, ttl=24 * 3600, max_channels=10_000).retention("dm:*")
    assert Direct.history is not None and Direct.history.retention("dm:*") == bounded

    first_process, second_process = two_processes()
    apps = []
    for one in (first_process, second_process):
        apps.append(FastAPI())
        apps[-1].include_router(one.router)
    async with (
        lifespan(apps[0]),
        lifespan(apps[1]),
        SocketTestClient(apps[0], query_string="token=ann") as ann,
        SocketTestClient(apps[1], query_string="token=bob") as bob,
    ):
        assert (await ann.subscribe("room:9"))["successful"]
        assert (await bob.subscribe("room:9"))["successful"]
        names = [m["id"] for m in (await bob.receive()).data["members"]]
        assert names == ["ann", "bob"]
