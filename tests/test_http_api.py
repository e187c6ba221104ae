"""The HTTP API over real uvicorn, on both brokers: what a caller and the subscribers see.

Publish, send to a user, disconnect a user, presence, history and counts; the guard; FastAPI's
own 422 for bad input (naming the field) with nothing sent; 404 for a channel no listener
serves; and the OpenAPI document the API adds to the app's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import websockets

from fastapi_channels import Broker
from tests.api_app import API_KEY, create_app
from tests.live import live_server

TIMEOUT = 5.0
HEADERS = {"X-API-Key": API_KEY}


class Api:
    def __init__(self, address: str, http: httpx.AsyncClient) -> None:
        self.address = address
        self.http = http

    async def post(self, path: str, body: Any, **options: Any) -> httpx.Response:
        options.setdefault("headers", HEADERS)
        return await self.http.post(f"/ws/api{path}", json=body, **options)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(f"/ws/api{path}", params=params, headers=HEADERS)

    async def socket(self, user: str | None = None, features: str | None = None) -> Socket:
        query = [f"user={user}"] if user else []
        if features:
            query.append(f"channels-features={features}")
        url = f"ws://{self.address}/ws" + (f"?{'&'.join(query)}" if query else "")
        ws = await websockets.connect(url, open_timeout=TIMEOUT)
        socket = Socket(ws)
        assert (await socket.receive())["event"] == "ready"
        return socket


class Socket:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws

    async def receive(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            packet: dict[str, Any] = json.loads(await self.ws.recv())
        return packet

    async def subscribe(self, channel: str) -> dict[str, Any]:
        request = {"event": "subscribe-channel-request", "data": {"channel": channel}}
        await self.ws.send(json.dumps(request))
        response = await self.receive()
        assert response["data"]["successful"], response
        return response


@pytest.fixture
async def api(make_broker: Callable[[], Broker]) -> AsyncIterator[Api]:
    async with (
        live_server(create_app(make_broker())) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=TIMEOUT) as http,
    ):
        yield Api(address, http)


async def test_publish_reaches_the_subscribers(api: Api) -> None:
    socket = await api.socket()
    await socket.subscribe("room:1")
    response = await api.post("/publish", {"channel": "room:1", "event": "said", "data": [1]})
    assert (response.status_code, response.json()) == (200, {"position": None})
    assert await socket.receive() == {"event": "said", "channel": "room:1", "data": [1]}
    await socket.ws.close()


async def test_publish_with_a_key_is_delivered_once(api: Api) -> None:
    socket = await api.socket()
    await socket.subscribe("lobby:1")
    await socket.receive()  # the member list
    body = {"channel": "lobby:1", "event": "said", "data": "hi", "key": "k-1"}
    first, second = [await api.post("/publish", body) for _ in range(2)]
    assert first.json() == second.json()
    assert first.json()["position"]["offset"] == 1
    await api.post("/publish", {"channel": "lobby:1", "event": "said", "data": "next"})
    assert [(await socket.receive())["data"] for _ in range(2)] == ["hi", "next"]
    history = (await api.get("/history", channel="lobby:1")).json()
    assert [m["data"] for m in history["messages"]] == ["hi", "next"]
    await socket.ws.close()


async def test_send_to_user_and_disconnect_user(api: Api) -> None:
    socket = await api.socket(user="ann")
    response = await api.post("/users/send", {"user": "ann", "event": "poke", "data": 1})
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert await socket.receive() == {"event": "poke", "data": 1}
    response = await api.post("/users/disconnect", {"user": "ann", "reason": "bye"})
    assert response.status_code == 200
    assert await socket.receive() == {"event": "disconnect", "data": {"reason": "bye"}}
    async with asyncio.timeout(TIMEOUT):
        await socket.ws.wait_closed()
    assert socket.ws.close_code == 1000


async def test_subscribe_and_unsubscribe_a_user(api: Api) -> None:
    socket = await api.socket(user="cy", features="server-subscriptions")
    response = await api.post("/users/subscribe", {"user": "cy", "channel": "room:7"})
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert await socket.receive() == {"event": "channels:subscribed", "data": {"channel": "room:7"}}
    await api.post("/publish", {"channel": "room:7", "event": "said", "data": "hi"})
    assert (await socket.receive())["data"] == "hi"
    response = await api.post("/users/unsubscribe", {"user": "cy", "channel": "room:7"})
    assert response.status_code == 200
    assert await socket.receive() == {
        "event": "channels:unsubscribed",
        "data": {"channel": "room:7"},
    }
    missing = await api.post("/users/subscribe", {"user": "cy", "channel": "nowhere"})
    assert missing.status_code == 404
    bad = await api.post("/users/subscribe", {"user": "cy", "channel": "a b"})
    assert bad.status_code == 422
    await socket.ws.close()


async def test_presence_history_and_counts(api: Api) -> None:
    socket = await api.socket(user="bob")
    await socket.subscribe("lobby:2")
    await socket.receive()
    presence = await api.get("/presence", channel="lobby:2")
    assert presence.json() == {"channel": "lobby:2", "members": [{"id": "bob"}]}
    await api.post("/publish", {"channel": "lobby:2", "event": "said", "data": 1})
    page = (await api.get("/history", channel="lobby:2", limit=10)).json()
    assert [(m["event"], m["data"], m["position"]["offset"]) for m in page["messages"]] == [
        ("said", 1, 1)
    ]
    since = page["position"]
    after = await api.get(
        "/history", channel="lobby:2", since_offset=since["offset"], since_epoch=since["epoch"]
    )
    assert (after.json()["recovered"], after.json()["messages"]) == (True, [])
    counts = (await api.get("/counts", timeout=2)).json()
    assert counts["connections"] == 1
    assert counts["subscribers"] == {"lobby:2": 1}
    assert counts["missing"] == []
    [process] = counts["processes"]
    assert (process["connections"], process["users"], process["subscriptions"]) == (1, 1, 1)
    await socket.ws.close()


async def test_the_guard_refuses_without_the_key(api: Api) -> None:
    body = {"channel": "room:1", "event": "said"}
    assert (await api.post("/publish", body, headers={})).status_code == 401
    wrong = await api.post("/publish", body, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    assert (await api.http.get("/ws/api/counts")).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "room:1"}, "event"),
        ({"channel": "room 1", "event": "said"}, "channel"),
        ({"channel": "room:*", "event": "said"}, "channel"),
        ({"channel": "x" * 201, "event": "said"}, "channel"),
        ({"channel": "room:1", "event": "bad\u0000event"}, "event"),
        ({"channel": "room:1", "event": "said", "key": "a b"}, "key"),
        ({"channel": "room:1", "event": "said", "extra": 1}, "extra"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field_and_sends_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    socket = await api.socket()
    await socket.subscribe("room:1")
    response = await api.post("/publish", body)
    assert response.status_code == 422
    assert [error["loc"][-1] for error in response.json()["detail"]] == [field]
    await api.post("/publish", {"channel": "room:1", "event": "fence"})
    assert (await socket.receive())["event"] == "fence"
    await socket.ws.close()


async def test_a_channel_no_listener_serves_is_a_404(api: Api) -> None:
    response = await api.post("/publish", {"channel": "nowhere:1", "event": "said"})
    assert response.status_code == 404
    assert "no channel listener serves" in response.json()["detail"]
    assert (await api.get("/presence", channel="room:1")).status_code == 404
    assert (await api.get("/history", channel="room:1")).status_code == 404


async def test_the_api_is_in_the_openapi_document(api: Api) -> None:
    document = (await api.http.get("/openapi.json")).json()
    paths = {path for path in document["paths"] if path.startswith("/ws/api/")}
    assert paths == {
        "/ws/api/publish",
        "/ws/api/users/send",
        "/ws/api/users/disconnect",
        "/ws/api/users/subscribe",
        "/ws/api/users/unsubscribe",
        "/ws/api/presence",
        "/ws/api/history",
        "/ws/api/counts",
    }
    assert "ChannelsAPIKey" in document["components"]["securitySchemes"]
    assert "Publish" in document["components"]["schemas"]
