"""The demo app (the README example) works end to end in-process."""

from __future__ import annotations

import httpx

from demo.app import app
from fastapi_channels.protocol import JOIN, LEAVE, PRESENCE
from fastapi_channels.testing import SocketTestClient, lifespan


async def test_demo_private_and_global_chat() -> None:
    async with (
        lifespan(app),
        SocketTestClient(app, subprotocols=["ann"]) as ann,
        SocketTestClient(app, subprotocols=["bob"]) as bob,
    ):
        assert ann.subprotocol == "ann"
        assert (await ann.subscribe("user:chat.ann"))["successful"]
        assert not (await bob.subscribe("user:chat.ann"))["successful"]
        await ann.emit("message", {"text": "note to self"}, channel="user:chat.ann")
        assert (await ann.receive()).data == {"text": "note to self"}
        await bob.assert_no_message()

        for client in (ann, bob):
            assert (await client.subscribe("global-chat"))["successful"]
        assert [(await ann.receive()).event for _ in range(2)] == [PRESENCE, JOIN]
        assert (await bob.receive()).event == PRESENCE
        await bob.emit("typing")
        await ann.emit("message", {"text": "hi all"}, channel="global-chat")
        for client in (ann, bob):
            assert (await client.receive()).data == {"from": "bob"}
            assert (await client.receive()).data == {"from": "ann", "text": "hi all"}

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            assert (await http.post("/announce", json={"text": "maintenance"})).status_code == 200
        for client in (ann, bob):
            assert (await client.receive()).data == {"text": "maintenance"}


async def test_demo_typed_events_replies_and_asyncapi() -> None:
    async with lifespan(app), SocketTestClient(app, subprotocols=["ann"]) as ann:
        assert (await ann.subscribe("global-chat"))["successful"]
        assert (await ann.receive()).event == PRESENCE
        assert await ann.request("message", {"text": "hi"}, channel="global-chat") == {
            "delivered": True
        }
        assert (await ann.receive()).data == {"from": "ann", "text": "hi"}
        await ann.emit("message", {"text": ""}, channel="global-chat")
        error = await ann.receive()
        assert error.data["code"] == "invalid-data"
        assert error.data["errors"][0]["loc"] == ["text"]

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            document = (await http.get("/ws/asyncapi.json")).json()
        assert document["channels"]["UserChat"]["address"] == "user:chat.{wildcard}"
        assert "GlobalChat.message.receive" in document["operations"]


async def test_demo_page_imports_the_javascript_client_the_app_serves() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
        page = await http.get("/")
        assert page.headers["content-type"].startswith("text/html")
        assert 'import { SocketClient } from "/ws/client.js"' in page.text
        module = await http.get("/ws/client.js")
        assert module.headers["content-type"].startswith("text/javascript")
        assert "export class SocketClient" in module.text


async def test_demo_shows_who_is_online_and_catches_up_after_a_reconnect() -> None:
    transport = httpx.ASGITransport(app=app)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://demo") as http,
        SocketTestClient(app, subprotocols=["ann"]) as ann,
        SocketTestClient(app) as anonymous,
    ):
        assert (await ann.subscribe("global-chat"))["successful"]
        assert (await ann.receive()).data["members"] == [{"id": "ann", "name": "Ann"}]
        assert (await anonymous.subscribe("global-chat"))["successful"]
        assert (await anonymous.receive()).data["members"] == [{"id": "ann", "name": "Ann"}]

        async with SocketTestClient(app, subprotocols=["bob"]) as bob:
            response = await bob.subscribe("global-chat")
            epoch = response["position"]["epoch"]
            members = (await bob.receive()).data["members"]
            assert members == [{"id": "ann", "name": "Ann"}, {"id": "bob", "name": "Bob"}]
            assert (await http.get("/chat/online")).json() == members
            await bob.emit("typing")  # live only: no position, not kept
            assert "position" not in await bob.receive()
            await bob.emit("message", {"text": "back soon"}, channel="global-chat")
            seen = (await bob.receive())["position"]
        for client in (ann, anonymous):
            assert (await client.receive()).event == JOIN
            assert (await client.receive()).data == {"from": "bob"}
            assert (await client.receive()).data == {"from": "bob", "text": "back soon"}
            assert (await client.receive()).event == LEAVE

        await ann.emit("message", {"text": "you missed this"}, channel="global-chat")
        assert (await http.post("/announce", json={"text": "and this"})).status_code == 200
        recent = (await http.get("/chat/history", params={"limit": 2})).json()
        assert [m["data"]["text"] for m in recent["messages"]] == ["you missed this", "and this"]

        async with SocketTestClient(app, subprotocols=["bob"]) as bob:
            await bob.emit("subscribe-channel-request", {"channel": "global-chat", "since": seen})
            response = await bob.receive()
            assert response.data["recovered"] is True
            assert response.data["position"] == {"offset": seen["offset"], "epoch": epoch}
            assert (await bob.receive()).event == PRESENCE
            missed = [await bob.receive() for _ in range(2)]
            assert [p.data["text"] for p in missed] == ["you missed this", "and this"]
            assert [p["position"]["offset"] for p in missed] == [
                seen["offset"] + 1,
                seen["offset"] + 2,
            ]
