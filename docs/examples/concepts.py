"""The samples of docs/concepts.md: a listener, a plain listener, middleware and the container."""

from __future__ import annotations

from dataclasses import dataclass

import injector
from fastapi import FastAPI
from starlette.requests import HTTPConnection

from fastapi_channels import (
    ChannelListener,
    Channels,
    Inject,
    Middleware,
    MiddlewareContext,
    Reject,
    SocketConnection,
    SocketListener,
    SocketPacket,
    channel,
    listener,
)
from fastapi_channels.app.middleware import CallNext


@dataclass
class User:
    id: str
    email_verified: bool = True


def current_user(connection: HTTPConnection) -> User | None:
    """Stands for real authentication (see docs/authentication.md): `?user=1&verified=no`."""
    user_id = connection.query_params.get("user")
    verified = connection.query_params.get("verified") != "no"
    return User(user_id, email_verified=verified) if user_id else None


# --8<-- [start:services]
class UserService:
    """Stands for the app's user store."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def display_name(self, user_id: str) -> str:
        return self.names.get(user_id, f"user {user_id}")


@injector.singleton  # one instance, shared by every listener that names it
class AuditLog(Middleware):
    """Writes down every event on the channels it guards."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    async def event(self, context: MiddlewareContext, call_next: CallNext) -> None:
        assert context.packet is not None
        self.entries.append(f"{context.user.id}: {context.packet.event} on {context.channel}")
        await call_next()


# --8<-- [end:services]


# --8<-- [start:listener]
@channel("user:chat.*")
class UserChat(ChannelListener):
    middleware = (AuditLog,)  # this channel's middleware (instances, or classes to build)
    require_user = True  # anonymous connections are refused

    def __init__(self, users: UserService) -> None:  # built by the injector container
        self.users = users

    async def is_authorised(self, connection: SocketConnection, user: User) -> bool:
        return self.wildcard == user.id  # user:chat.<id> is that user's own

    @channel.on("message")
    async def message(self, connection: SocketConnection, user: User, packet: SocketPacket) -> None:
        line = {"from": self.users.display_name(user.id), "text": packet.data["text"]}
        await self.broadcast(self.channel_name, "message", line)


# --8<-- [end:listener]


# --8<-- [start:plain]
@listener("whoami")
class WhoAmI(SocketListener):
    async def handle(self, connection: SocketConnection, user: User | None) -> None:
        await connection.send("whoami", {"id": user.id if user else None})


# --8<-- [end:plain]


# --8<-- [start:middleware]
class RequireVerifiedEmail(Middleware):
    async def subscribe(self, context: MiddlewareContext, call_next: CallNext) -> None:
        if context.user is not None and not context.user.email_verified:
            raise Reject("verify your email first")  # the reason the client sees
        await call_next()


# --8<-- [end:middleware]


# --8<-- [start:container]
container = injector.Injector()
container.binder.bind(UserService, to=UserService({"1": "Ann", "2": "Bob"}))

channels = Channels(
    user=current_user,
    listeners=[UserChat, WhoAmI],
    middleware=[RequireVerifiedEmail],
    container=container,
)
app = FastAPI()
app.include_router(channels.router)


@app.get("/users/{user_id}/name")
async def display_name(user_id: str, users: UserService = Inject(UserService)) -> str:
    return users.display_name(user_id)  # the same UserService the listeners got


# --8<-- [end:container]


async def check() -> None:
    """Each claim of the concepts page, on this app."""
    from docs.examples._support import started
    from fastapi_channels.testing import SocketTestClient

    async with (
        started(app) as http,
        SocketTestClient(app, query_string="user=1") as ann,
        SocketTestClient(app, query_string="user=3&verified=no") as unverified,
        SocketTestClient(app) as anonymous,
    ):
        assert (await ann.subscribe("user:chat.1"))["successful"]
        assert (await ann.subscribe("user:chat.2"))["reason"] == "not authorised"
        refused = await unverified.subscribe("user:chat.3")
        assert refused["reason"] == "verify your email first"
        assert (await anonymous.subscribe("user:chat.1"))["reason"] == "authentication required"

        await ann.emit("message", {"text": "hi"}, channel="user:chat.1")
        assert (await ann.receive()).data == {"from": "Ann", "text": "hi"}
        assert container.get(AuditLog).entries == ["1: message on user:chat.1"]

        await ann.emit("is_authorised", channel="user:chat.1")  # only @channel.on methods
        assert (await ann.receive()).data["code"] == "unknown-event"
        await anonymous.emit("whoami")
        assert (await anonymous.receive()).data == {"id": None}
        assert (await http.get("/users/2/name")).json() == "Bob"
