"""The app the client tests run against, from Python (``tests/test_client*.py``) and Node.

Tokens are not JWTs here: ``user-<name>`` or ``user-<name>.<generation>`` authenticate ``name``
(the generation lets a test tell a fresh token from the old one), anything else is refused with
the reason ``invalid token`` (a ``disconnect`` packet, then a close 1000), and no token means an
anonymous connection. The token is read from
the subprotocol offer (the first value, or the value after ``bearer``), the ``Authorization``
header or the ``token`` query parameter.

``feed:*`` channels keep a history (the last 20 events) and are presence channels, for the
clients' position tracking, recovery and member lists.

``/replies`` answers every packet that has an ``id`` with a ``channels:reply`` (an ``error`` for
the event ``fail``, nothing for ``ignore``), so the clients' ``request`` is tested apart from any
listener.

:func:`create_jwt_app` authenticates with real JWTs (``JWTAuth``) instead, for token expiry and
in-band renewal; ``POST /_test/token`` issues them.
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from fastapi_channels import (
    ChannelListener,
    Channels,
    History,
    Limits,
    OutcomeUnknown,
    Reject,
    SocketConnection,
    SocketListener,
    SocketPacket,
    SocketServer,
    channel,
    listener,
)
from fastapi_channels.auth import JWTAuth, Key, TokenVerifier, get_authentication
from fastapi_channels.edge.di import Inject


def _offered_token(websocket: WebSocket) -> str | None:
    offered: list[str] = websocket.scope.get("subprotocols", [])
    lowered = [value.lower() for value in offered]
    if "bearer" in lowered:
        index = lowered.index("bearer") + 1
        return offered[index] if index < len(offered) else None
    if offered:
        return offered[0]
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return websocket.query_params.get("token")


async def token_user(websocket: WebSocket) -> dict[str, str] | None:
    """The test app's user dependency (see the module docstring)."""
    token = _offered_token(websocket)
    if token is None or token in ("", "null", "undefined"):
        return None
    if not token.startswith("user-") or len(token) == 5:
        raise Reject("invalid token")
    return {"id": token[5:].split(".")[0], "token": token}


@channel("public:*")
class PublicChannel(ChannelListener):
    """Anyone may subscribe; ``say`` is broadcast back as ``said``."""

    @channel.on("say")
    async def say(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await self.broadcast(self.channel_name, "said", packet.data)

    @channel.on("say-flaky")
    async def say_flaky(self, packet: SocketPacket) -> dict[str, Any]:
        """Broadcast ``said``, then fail with ``outcome-unknown`` the first time a key is seen
        (as a Redis stall after the publish would): the clients' retries send the same key."""
        await self.broadcast(self.channel_name, "said", packet.data)
        attempts = FLAKY_ATTEMPTS[packet.key] = FLAKY_ATTEMPTS.get(packet.key, 0) + 1
        if attempts == 1:
            raise OutcomeUnknown("no answer from the broker in time")
        return {"key": packet.key, "attempts": attempts}


FLAKY_ATTEMPTS: dict[str | None, int] = {}
"""How often ``say-flaky`` ran for each idempotency key."""


@channel("private:*")
class PrivateChannel(ChannelListener):
    """Only the user named after the ``:`` may subscribe."""

    async def is_authorised(self, connection: SocketConnection, user: Any) -> bool:
        return user is not None and user["id"] == self.wildcard


@channel("feed:*")
class FeedChannel(ChannelListener):
    """Keeps the last 20 events; a presence channel; ``say`` is broadcast back as ``said``."""

    history = History(size=20)
    presence = True

    @channel.on("say")
    async def say(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await self.broadcast(self.channel_name, "said", packet.data)


@listener("whoami")
class WhoAmI(SocketListener):
    """Answers ``whoami`` with the connection's user and token."""

    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await connection.send(
            "whoami", {"user": user and user["id"], "token": user and user["token"]}
        )


@listener("echo")
class Echo(SocketListener):
    """Answers ``echo`` with the same data."""

    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await connection.send("echo", packet.data)


@listener("add")
class Add(SocketListener):
    """Returns ``{"sum": a + b}``: the reply to a request; refuses anything but numbers."""

    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> Any:
        data = packet.data
        if not isinstance(data, dict) or not all(
            isinstance(data.get(key), int | float) for key in ("a", "b")
        ):
            raise Reject("a and b must be numbers")
        return {"sum": data["a"] + data["b"]}


async def _replies(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=offered[0] if offered else None)
    await websocket.send_text(json.dumps({"event": "ready", "data": {"id": "replies"}}))
    try:
        while True:
            packet = json.loads(await websocket.receive_text())
            if "id" not in packet or packet["event"] == "ignore":
                continue
            reply: dict[str, Any] = {"event": "channels:reply", "id": packet["id"]}
            if packet["event"] == "fail":
                reply["error"] = {"code": "rejected", "message": "refused on purpose"}
            else:
                reply["data"] = {"event": packet["event"], "data": packet.get("data")}
            await websocket.send_text(json.dumps(reply))
    except WebSocketDisconnect:
        return


Server = Annotated[SocketServer, Inject(SocketServer)]


class Publish(BaseModel):
    channel: str
    event: str
    data: Any = None


class Send(BaseModel):
    """A plain event for every connection of one user (``/_test/send``)."""

    user: str
    event: str
    data: Any = None


class Close(BaseModel):
    code: int
    reason: str = "closed by the test"


class Restart(BaseModel):
    spread: float


class UserSubscription(BaseModel):
    user: str
    channel: str
    subscribe: bool = True


def create_app(limits: Limits | None = None) -> FastAPI:
    """Build a fresh app (one ``Channels`` per app)."""
    channels = Channels(
        token_user,
        listeners=[PublicChannel, PrivateChannel, FeedChannel, WhoAmI, Echo, Add],
        limits=limits,
    )
    app = FastAPI()
    app.include_router(channels.router)
    app.add_api_websocket_route("/replies", _replies)

    @app.post("/_test/publish")
    async def publish(body: Publish, server: Server) -> dict[str, Any]:
        listener = FeedChannel if body.channel.startswith("feed:") else PublicChannel
        position = await server.broadcast(listener, body.channel, body.event, body.data)
        return {"ok": True, "offset": position.offset if position else None}

    @app.post("/_test/send")
    async def send(body: Send, server: Server) -> dict[str, bool]:
        await server.send_to_user(body.user, body.event, body.data)
        return {"ok": True}

    @app.post("/_test/close")
    async def close(body: Close, server: Server) -> dict[str, int]:
        connections = server.connections
        for connection in connections:
            await connection.disconnect(body.reason, code=body.code)
        return {"closed": len(connections)}

    @app.post("/_test/restart")
    async def restart(body: Restart, server: Server) -> dict[str, int]:
        """End every connection as a restart does, the server staying up for the return."""
        connections = server.connections
        for connection in connections:
            server.end_for_restart(connection, body.spread)
        return {"ended": len(connections)}

    @app.post("/_test/user-subscription")
    async def user_subscription(body: UserSubscription, server: Server) -> dict[str, bool]:
        change = server.subscribe_user if body.subscribe else server.unsubscribe_user
        await change(body.user, body.channel)
        return {"ok": True}

    return app


@listener("whoami")
class WhoAmIJwt(SocketListener):
    """Answers ``whoami`` with the token's subject and expiry."""

    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        found = get_authentication(connection)
        await connection.send(
            "whoami",
            {"user": user and user.id, "expires_at": found and found.expires_at},
        )


class TokenRequest(BaseModel):
    sub: str
    lifetime: int = 60


def create_jwt_app() -> FastAPI:
    """An app authenticating with JWTs signed by a fresh random key."""
    auth = JWTAuth(TokenVerifier(Key.hmac(secrets.token_bytes(32))))
    channels = Channels(auth, listeners=[PublicChannel, WhoAmIJwt])
    app = FastAPI()
    app.include_router(channels.router)

    @app.post("/_test/token")
    async def token(body: TokenRequest) -> dict[str, str]:
        return {"token": auth.issue(body.sub, lifetime=body.lifetime)}

    return app
