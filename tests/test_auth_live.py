"""Authentication over a real uvicorn server and a real websocket client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI
from websockets.typing import Origin, Subprotocol

from docs.examples.private.private_chat import app as chat_app
from docs.examples.private.private_chat import auth as chat_auth
from fastapi_channels import ChannelListener, Channels, channel
from fastapi_channels.auth import JWTAuth, Key, TokenVerifier
from tests.live import live_server

from .auth_support import OTHER_SECRET, SECRET, claims, hs256, short_lived


@channel("room")
class Room(ChannelListener):
    pass


def build() -> FastAPI:
    auth = JWTAuth(TokenVerifier(Key.hmac(SECRET)), sources=["subprotocol", "header", "cookie"])
    channels = Channels(user=auth, listeners=[Room])
    app = FastAPI()
    app.include_router(channels.router)
    return app


@pytest.fixture
async def address() -> AsyncIterator[str]:
    async with live_server(build()) as address:
        yield address


def connect(address: str, *subprotocols: str, **options: Any) -> websockets.connect:
    offered = [Subprotocol(value) for value in subprotocols] or None
    return websockets.connect(f"ws://{address}/ws", subprotocols=offered, open_timeout=5, **options)


async def receive(ws: websockets.ClientConnection, timeout: float = 2) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        frame = await ws.recv(decode=True)
    assert isinstance(frame, str)
    packet = json.loads(frame)
    assert isinstance(packet, dict)
    return packet


async def expect_closed(ws: websockets.ClientConnection, code: int, reason: str) -> None:
    with pytest.raises(websockets.ConnectionClosed):
        await receive(ws)
    assert (ws.close_code, ws.close_reason) == (code, reason)


async def test_token_alone_is_echoed_and_authenticates(address: str) -> None:
    token = hs256(claims())
    async with connect(address, token) as ws:
        assert ws.subprotocol == token
        assert (await receive(ws))["event"] == "ready"


async def test_bearer_pair_is_answered_with_the_marker(address: str) -> None:
    async with connect(address, "bearer", hs256(claims())) as ws:
        assert ws.subprotocol == "bearer"
        assert (await receive(ws))["event"] == "ready"


async def test_authorization_header_from_a_non_browser_client(address: str) -> None:
    headers = {"Authorization": f"Bearer {hs256(claims())}"}
    async with connect(address, additional_headers=headers) as ws:
        assert ws.subprotocol is None
        assert (await receive(ws))["event"] == "ready"


async def test_bad_token_is_refused_with_a_clean_close(address: str) -> None:
    async with connect(address, hs256(claims(), OTHER_SECRET)) as ws:
        assert await receive(ws) == {
            "event": "disconnect",
            "data": {"reason": "authentication failed"},
        }
        await expect_closed(ws, 1000, "authentication failed")


async def test_cookie_from_a_foreign_origin_is_refused(address: str) -> None:
    cookie = {"Cookie": f"access_token={hs256(claims())}"}
    evil = Origin("https://evil.test")
    async with connect(address, additional_headers=cookie, origin=evil) as ws:
        assert (await receive(ws))["data"] == {"reason": "origin not allowed"}
        await expect_closed(ws, 1000, "origin not allowed")
    same = Origin(f"http://{address}")
    async with connect(address, additional_headers=cookie, origin=same) as ws:
        assert (await receive(ws))["event"] == "ready"


async def test_short_lived_token_expires_mid_connection(address: str) -> None:
    token, expires = short_lived()
    async with connect(address, token) as ws:
        assert (await receive(ws))["event"] == "ready"
        await ws.send(
            json.dumps({"event": "subscribe-channel-request", "data": {"channel": "room"}})
        )
        assert (await receive(ws))["data"]["successful"] is True
        assert await receive(ws, timeout=5) == {
            "event": "disconnect",
            "data": {"reason": "token expired"},
        }
        assert time.time() >= expires - 0.01  # the loop may run a timer a hair early
        await expect_closed(ws, 4001, "token expired")


async def test_renewal_over_the_wire_outlives_the_first_token(address: str) -> None:
    token, expires = short_lived()
    async with connect(address, token) as ws:
        assert (await receive(ws))["event"] == "ready"
        renewal = {"event": "channels:authenticate", "data": {"token": hs256(claims(lifetime=60))}}
        await ws.send(json.dumps(renewal))
        response = await receive(ws)
        assert response["event"] == "channels:authenticate-response"
        assert response["data"]["successful"] is True
        with pytest.raises(TimeoutError):  # the first token's expiry passes quietly
            await receive(ws, timeout=expires - time.time() + 0.3)
        await ws.send(
            json.dumps({"event": "subscribe-channel-request", "data": {"channel": "room"}})
        )
        assert (await receive(ws))["data"]["successful"] is True


async def test_worked_example_login_then_channels() -> None:
    """The documentation's tutorial app: log in over HTTP, then use the token on channels."""
    async with live_server(chat_app) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            refused = await http.post("/login", json={"username": "ann", "password": "nope"})
            assert refused.status_code == 401
            login = await http.post("/login", json={"username": "ann", "password": "correct horse"})
            assert login.status_code == 200
            token = login.json()["access_token"]
            me = await http.get("/me", headers={"Authorization": f"Bearer {token}"})
            assert me.json() == {"id": "ann", "name": "Ann"}
            assert (await http.get("/me")).status_code == 401
        async with connect(address, "bearer", token) as ws:
            assert (await receive(ws))["event"] == "ready"
            for name, allowed in (("dm:ann.bob", True), ("dm:bob.eve", False)):
                request = {"event": "subscribe-channel-request", "data": {"channel": name}}
                await ws.send(json.dumps(request))
                assert (await receive(ws))["data"]["successful"] is allowed
            packet = {"event": "message", "channel": "dm:ann.bob", "data": {"text": "milk"}}
            await ws.send(json.dumps(packet))
            assert await receive(ws) == {
                "event": "message",
                "channel": "dm:ann.bob",
                "data": {"author": "ann", "text": "milk"},
            }
            fresh = chat_auth.issue("ann")
            await ws.send(json.dumps({"event": "channels:authenticate", "data": {"token": fresh}}))
            assert (await receive(ws))["data"]["successful"] is True
