"""The app the client tests run against, from Python (``tests/test_client*.py``) and Node.

Tokens are not JWTs here: ``user-<name>`` or ``user-<name>.<generation>`` authenticate ``name``
(the generation lets a test tell a fresh token from the old one), anything else is refused with
the reason ``invalid token`` (a ``disconnect`` packet, then a close 1000), and no token means an
anonymous connection. The token is read from
the subprotocol offer (the first value, or the value after ``bearer``), the ``Authorization``
header or the ``token`` query parameter.

``/replies`` emulates the request/reply extension (a packet with an ``id`` answered by
``{"event": "channels:reply", "id": ..., "data": ..., "error"?: ...}``) until the server
implements it; the clients' ``request`` is tested against it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from fastapi_channels import (
    ChannelListener,
    Channels,
    Limits,
    Reject,
    SocketConnection,
    SocketListener,
    SocketPacket,
    SocketServer,
    channel,
    listener,
)
from fastapi_channels.di import Inject


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


@channel("private:*")
class PrivateChannel(ChannelListener):
    """Only the user named after the ``:`` may subscribe."""

    async def is_authorised(self, connection: SocketConnection, user: Any) -> bool:
        return user is not None and user["id"] == self.wildcard


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


class Close(BaseModel):
    code: int
    reason: str = "closed by the test"


def create_app(limits: Limits | None = None) -> FastAPI:
    """Build a fresh app (one ``Channels`` per app)."""
    channels = Channels(
        token_user,
        listeners=[PublicChannel, PrivateChannel, WhoAmI, Echo],
        limits=limits,
    )
    app = FastAPI()
    app.include_router(channels.router)
    app.add_api_websocket_route("/replies", _replies)

    @app.post("/_test/publish")
    async def publish(body: Publish, server: Server) -> dict[str, bool]:
        await server.broadcast(PublicChannel, body.channel, body.event, body.data)
        return {"ok": True}

    @app.post("/_test/close")
    async def close(body: Close, server: Server) -> dict[str, int]:
        connections = server.connections
        for connection in connections:
            await connection.disconnect(body.reason, code=body.code)
        return {"closed": len(connections)}

    return app
