"""The samples of docs/sending.md: every way to send, from handlers, routes and user models."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from fastapi_channels import (
    ChannelListener,
    Channels,
    Inject,
    SocketConnection,
    SocketServer,
    SocketUserMixin,
    channel,
)


# --8<-- [start:user]
class User(SocketUserMixin):  # e.g. class User(SocketUserMixin, Base) with your ORM's Base
    def __init__(self, id: str, name: str) -> None:
        self.id = id  # what socket_user_id() returns unless you override it
        self.name = name


# --8<-- [end:user]


def current_user(connection: HTTPConnection) -> User | None:
    """Stands for real authentication (see docs/authentication.md): `?user=ann`."""
    name = connection.query_params.get("user")
    return User(name, name.title()) if name else None


# --8<-- [start:handler]
@channel("global-chat")
class GlobalChat(ChannelListener):
    @channel.on("message")
    async def message(self, connection: SocketConnection, user: User, data: str) -> None:
        await self.broadcast(self.channel_name, "message", {"from": user.name, "text": data})
        await connection.send("sent", {"text": data})  # to this connection only

    @channel.on("whisper")
    async def whisper(self, connection: SocketConnection) -> None:
        # to this connection, and only while it is subscribed to the channel
        await connection.send_to_channel(self.channel_name, "whisper", "only you see this")

    # --8<-- [start:others]
    @channel.on("typing")
    async def typing(self, connection: SocketConnection, user: User) -> None:
        # to every subscriber but the sender, on every process
        await self.broadcast(self.channel_name, "typing", user.name, exclude=connection)

    # --8<-- [end:others]


# --8<-- [end:handler]


@channel("team:*")
class Team(ChannelListener):
    async def is_authorised(self, connection: SocketConnection, user: User) -> bool:
        return False  # joined only when the server decides (subscribe_user)


channels = Channels(user=current_user, listeners=[GlobalChat, Team])
app = FastAPI()
app.include_router(channels.router)


# --8<-- [start:route]
class Announcement(BaseModel):
    text: str


@app.post("/announce")
async def announce(body: Announcement, server: SocketServer = Inject(SocketServer)) -> None:
    await server.broadcast(GlobalChat, "global-chat", "announcement", body)  # a model is fine


@app.post("/users/{user_id}/kick")
async def kick(user_id: str, server: SocketServer = Inject(SocketServer)) -> None:
    await server.send_to_user(user_id, "notice", {"text": "you are being signed out"})
    await server.disconnect_user(user_id, "signed out by an administrator")


# --8<-- [end:route]


# --8<-- [start:control]
@app.post("/teams/{team}/members/{user_id}")
async def add_member(team: str, user_id: str, server: SocketServer = Inject(SocketServer)) -> None:
    # every open connection of the user joins the channel, on every process
    await server.subscribe_user(user_id, f"team:{team}")


@app.delete("/teams/{team}/members/{user_id}")
async def remove_member(
    team: str, user_id: str, server: SocketServer = Inject(SocketServer)
) -> None:
    await server.unsubscribe_user(user_id, f"team:{team}")


# --8<-- [end:control]


# --8<-- [start:mixin]
async def mail_arrived(user: User) -> None:
    """Called from anywhere in the process: a route, a task, a queue consumer."""
    await user.send_socket_event("notification", {"text": "You have mail"})
    await user.send_socket_channel_event(GlobalChat, "global-chat", "unread", {"count": 1})


# --8<-- [end:mixin]


async def check() -> None:
    """Every send on the page, seen by the connections it is meant for, and by no other."""
    from docs.examples._support import started
    from fastapi_channels import InvalidChannel
    from fastapi_channels.testing import SocketTestClient

    OURS = "channels-features=reconnect-advice,server-subscriptions"  # what our clients announce

    async with (
        started(app) as http,
        SocketTestClient(app, query_string="user=ann") as ann,
        SocketTestClient(app, query_string="user=bob") as bob,
    ):
        assert (await ann.subscribe("global-chat"))["successful"]
        await bob.emit("whisper", channel="global-chat")  # not subscribed: an error, no whisper
        assert (await bob.receive()).data["code"] == "not-subscribed"

        await ann.emit("message", "hi", channel="global-chat")
        assert (await ann.receive()).data == {"from": "Ann", "text": "hi"}
        assert (await ann.receive()) == {"event": "sent", "data": {"text": "hi"}}
        await ann.emit("whisper", channel="global-chat")
        assert (await ann.receive()).data == "only you see this"

        await mail_arrived(User("ann", "Ann"))
        assert (await ann.receive()).data == {"text": "You have mail"}
        assert (await ann.receive()) == {
            "event": "unread",
            "channel": "global-chat",
            "data": {"count": 1},
        }
        await mail_arrived(User("bob", "Bob"))  # bob is not subscribed: no channel event
        assert (await bob.receive()).event == "notification"
        await bob.assert_no_message()

        await http.post("/announce", json={"text": "tea at four"})
        assert (await ann.receive()).data == {"text": "tea at four"}
        await http.post("/users/ann/kick")
        assert (await ann.receive()).event == "notice"
        assert (await ann.receive()).data == {"reason": "signed out by an administrator"}
        assert (await ann.receive_closed())[0] == 1000

        async with (
            SocketTestClient(app, query_string=f"user=cy&{OURS}") as cy,
            SocketTestClient(app, query_string=f"user=di&{OURS}") as di,
            SocketTestClient(app, query_string="user=cy") as envuso,  # announces nothing
        ):
            for client in (cy, di):
                assert (await client.subscribe("global-chat"))["successful"]
            await cy.emit("typing", channel="global-chat")
            assert (await di.receive()).data == "Cy"
            await cy.assert_no_message()

            assert (await cy.subscribe("team:red"))["successful"] is False
            await http.post("/teams/red/members/cy")
            assert await cy.receive() == {
                "event": "channels:subscribed",
                "data": {"channel": "team:red"},
            }
            await channels.server.broadcast("team:red", "goal", 1)
            assert (await cy.receive()).data == 1
            await envuso.assert_no_message()  # Envuso's client would throw on team:red events
            await http.delete("/teams/red/members/cy")
            assert (await cy.receive()).event == "channels:unsubscribed"

        server = channels.server
        try:
            await server.broadcast(GlobalChat, "global-chta", "message", "typo")
        except InvalidChannel as exc:
            assert "does not match pattern 'global-chat'" in str(exc)
        else:
            raise AssertionError("a channel its listener does not serve must fail")
