"""The README example's shape over a real uvicorn server and a real websocket client."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from fastapi_channels import (
    Broker,
    ChannelListener,
    Channels,
    Inject,
    SocketConnection,
    SocketPacket,
    SocketServer,
    channel,
)
from tests.live import live_server


@channel("global-chat")
class GlobalChat(ChannelListener):
    @channel.on("message")
    async def message(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        await self.broadcast(self.channel_name, "message", {"by": user, **packet.data})


class Announcement(BaseModel):
    text: str


def user_from_token(connection: HTTPConnection) -> str | None:
    offered = connection.headers.get("sec-websocket-protocol")
    if offered == "bad-token":
        raise HTTPException(401)
    return offered


def build(broker: Broker) -> FastAPI:
    channels = Channels(user=user_from_token, listeners=[GlobalChat], broker=broker)
    app = FastAPI()
    app.include_router(channels.router)

    @app.post("/announce")
    async def announce(body: Announcement, server: SocketServer = Inject(SocketServer)) -> None:
        await server.broadcast(GlobalChat, "global-chat", "message", body.model_dump())

    return app


async def receive(ws: websockets.ClientConnection) -> dict[str, Any]:
    frame = await ws.recv(decode=True)
    assert isinstance(frame, str)
    packet = json.loads(frame)
    assert isinstance(packet, dict)
    return packet


@pytest.fixture
async def address(make_broker: Callable[[], Broker]) -> Any:
    async with live_server(build(make_broker())) as address:
        yield address


async def test_handshake_echoes_the_token_subprotocol_and_sends_ready_first(address: str) -> None:
    async with websockets.connect(f"ws://{address}/ws", subprotocols=["alice"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "alice"
        assert (await receive(ws))["event"] == "ready"


async def test_chat_and_http_broadcast_over_the_wire(address: str) -> None:
    async with (
        websockets.connect(f"ws://{address}/ws", subprotocols=["alice"]) as alice,  # type: ignore[list-item]
        websockets.connect(f"ws://{address}/ws") as anonymous,
    ):
        for ws in (alice, anonymous):
            await receive(ws)  # ready
            await ws.send(
                json.dumps(
                    {"event": "subscribe-channel-request", "data": {"channel": "global-chat"}}
                )
            )
            assert (await receive(ws))["data"] == {"channel": "global-chat", "successful": True}
        await alice.send(
            json.dumps({"event": "message", "channel": "global-chat", "data": {"t": 1}})
        )
        for ws in (alice, anonymous):
            assert await receive(ws) == {
                "event": "message",
                "channel": "global-chat",
                "data": {"by": "alice", "t": 1},
            }
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            response = await http.post("/announce", json={"text": "from http"})
            assert response.status_code == 200
        for ws in (alice, anonymous):
            assert (await receive(ws))["data"] == {"text": "from http"}


async def test_refusal_is_a_disconnect_packet_and_a_clean_close(address: str) -> None:
    async with websockets.connect(f"ws://{address}/ws", subprotocols=["bad-token"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "bad-token"
        assert await receive(ws) == {"event": "disconnect", "data": {"reason": "unauthorised"}}
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()
        assert ws.close_code == 1000
