"""The demo chat works end to end in-process: login, the room, inboxes, typing, announcements,
who is online and catching up after a reconnect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

import httpx
import pytest

from demo.app import app
from demo.users import Directory
from fastapi_channels import ReplyError
from fastapi_channels.testing import SocketTestClient, lifespan


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://demo") as c:
        yield c


async def log_in(http: httpx.AsyncClient, name: str) -> str:
    response = await http.post("/login", json={"username": name})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def connect(stack: AsyncExitStack, http: httpx.AsyncClient, name: str) -> SocketTestClient:
    """Log in as ``name`` and connect with the token, subscribed to the room and the inbox."""
    token = await log_in(http, name)
    client = await stack.enter_async_context(SocketTestClient(app, subprotocols=[token]))
    for channel in ("global-chat", f"chat:user.{name}"):
        assert (await client.subscribe(channel))["successful"]
    return client


async def everyone(
    stack: AsyncExitStack, http: httpx.AsyncClient, *names: str
) -> list[SocketTestClient]:
    """Connect each of ``names`` in turn; each sees who was online, then who came after."""
    clients: list[SocketTestClient] = []
    for name in names:
        client = await connect(stack, http, name)
        online = await client.receive()
        assert online.event == "channels:presence"
        assert online.data["members"] == [{"id": n} for n in sorted(names[: len(clients) + 1])]
        clients.append(client)
    for index, client in enumerate(clients):
        for later in names[index + 1 :]:
            joined = await client.receive()
            assert (joined.event, joined.data["member"]) == ("channels:join", {"id": later})
    return clients


def said(packet: Any) -> dict[str, Any]:
    """A chat line's data without its time (checked to be a time)."""
    data = dict(packet.data)
    datetime.fromisoformat(data.pop("at"))
    return data


async def test_login_answers_a_token_for_a_safe_name_only(http: httpx.AsyncClient) -> None:
    token = await log_in(http, "ann")
    async with SocketTestClient(app, subprotocols=[token]) as ann:
        assert ann.subprotocol == token
    for bad in ("", "Ann", "ann bob", "a" * 25, "ann:x", "../etc"):
        assert (await http.post("/login", json={"username": bad})).status_code == 422, bad
    assert (await http.post("/login", json={})).status_code == 422


async def test_connections_without_a_valid_token_are_refused(http: httpx.AsyncClient) -> None:
    for offered in ([], ["ann"], ["not.a.token"]):
        refused = SocketTestClient(app, subprotocols=offered)
        packet = await refused.connect()
        assert packet.event == "disconnect"
        await refused.close()


async def test_global_chat_and_its_typing_indicator(http: httpx.AsyncClient) -> None:
    async with AsyncExitStack() as stack:
        ann, bob = await everyone(stack, http, "ann", "bob")
        await bob.emit("typing")  # no data: the room
        await bob.emit("typing", {})
        assert await ann.request("message", {"text": "hi all"}, channel="global-chat") == {
            "delivered": True
        }
        for client in (ann, bob):
            for _ in range(2):
                typing = await client.receive()
                assert (typing.channel, typing.event) == ("global-chat", "typing")
                assert typing.data == {"from": "bob", "to": None}
            message = await client.receive()
            assert message.channel == "global-chat"
            assert said(message) == {"from": "ann", "text": "hi all"}

        with pytest.raises(ReplyError) as refused:
            await ann.request("message", {"text": ""}, channel="global-chat")
        assert refused.value.code == "invalid-data"


async def test_direct_messages_reach_the_recipient_and_the_sender_only(
    http: httpx.AsyncClient,
) -> None:
    async with AsyncExitStack() as stack:
        ann, bob, carol = await everyone(stack, http, "ann", "bob", "carol")
        # Nobody may listen to someone else's inbox, nor send from it.
        assert (await carol.subscribe("chat:user.bob")) == {
            "channel": "chat:user.bob",
            "successful": False,
            "reason": "not authorised",
        }
        with pytest.raises(ReplyError) as not_yours:
            await carol.request("message", {"to": "ann", "text": "x"}, channel="chat:user.bob")
        assert not_yours.value.code == "not-subscribed"

        sent = {"to": "bob", "text": "psst"}
        assert await ann.request("message", sent, channel="chat:user.ann") == {"delivered": True}
        line = {"from": "ann", "to": "bob", "text": "psst"}
        assert said(await bob.receive()) == line
        echo = await ann.receive()
        assert echo.channel == "chat:user.ann"
        assert said(echo) == line

        await ann.emit("typing", {"to": "bob"})
        typing = await bob.receive()
        assert (typing.channel, typing.data) == ("chat:user.bob", {"from": "ann", "to": "bob"})

        with pytest.raises(ReplyError) as bad_name:
            await ann.request("message", {"to": "Bob!", "text": "x"}, channel="chat:user.ann")
        assert bad_name.value.code == "invalid-data"
        await carol.assert_no_message()
        await ann.assert_no_message()


async def test_direct_messages_go_only_to_users_who_logged_in(http: httpx.AsyncClient) -> None:
    async with AsyncExitStack() as stack:
        (ann,) = await everyone(stack, http, "ann")
        with pytest.raises(ReplyError) as unknown:
            await ann.request("message", {"to": "nobody-yet", "text": "x"}, channel="chat:user.ann")
        assert (unknown.value.code, unknown.value.message) == (
            "rejected",
            "no user named nobody-yet has logged in",
        )
        await ann.assert_no_message()  # not even the echo: nothing was sent, nothing kept
        token = await log_in(http, "nobody-yet")
        async with SocketTestClient(app, subprotocols=[token]) as late:
            response = await late.subscribe("chat:user.nobody-yet")
            assert response["position"]["offset"] == 0  # the refused line was kept nowhere
            sent = {"to": "nobody-yet", "text": "now"}
            assert await ann.request("message", sent, channel="chat:user.ann") == {
                "delivered": True
            }
            assert said(await late.receive()) == {"from": "ann", **sent}


async def test_announcements_need_the_admin_token(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"text": "maintenance at noon"}
    monkeypatch.delenv("DEMO_ADMIN_TOKEN", raising=False)
    assert (await http.post("/announce", json=body)).status_code == 403
    monkeypatch.setenv("DEMO_ADMIN_TOKEN", "operator-secret")
    async with AsyncExitStack() as stack:
        (ann,) = await everyone(stack, http, "ann")
        user_token = await log_in(http, "admin")
        for headers in ({}, {"Authorization": f"Bearer {user_token}"}):
            refused = await http.post("/announce", json=body, headers=headers)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
        admin = {"Authorization": "Bearer operator-secret"}
        assert (await http.post("/announce", json=body, headers=admin)).status_code == 204
        announcement = await ann.receive()
        assert (announcement.event, said(announcement)) == ("announcement", body)


async def test_who_is_online_follows_connections(http: httpx.AsyncClient) -> None:
    async with AsyncExitStack() as stack:
        ann, bob = await everyone(stack, http, "ann", "bob")
        async with SocketTestClient(app, subprotocols=[await log_in(http, "bob")]) as second_tab:
            assert (await second_tab.subscribe("global-chat"))["successful"]
            assert (await second_tab.receive()).data["members"] == [{"id": "ann"}, {"id": "bob"}]
        await ann.assert_no_message()  # bob is still there in his first tab
        await bob.close()
        left = await ann.receive()
        assert (left.event, left.data["member"]) == ("channels:leave", {"id": "bob"})


async def test_the_page_loads_kept_messages_then_catches_up_after_a_reconnect(
    http: httpx.AsyncClient,
) -> None:
    async with AsyncExitStack() as stack:
        (ann,) = await everyone(stack, http, "ann")
        bob_token = await log_in(http, "bob")
        bearer = {"Authorization": f"Bearer {bob_token}"}
        # What the page does: load what the room and the inbox keep, then subscribe from there.
        kept = {}
        for channel in ("global-chat", "chat:user.bob"):
            response = await http.get(f"/history/{channel}", headers=bearer)
            assert response.status_code == 200
            kept[channel] = response.json()
        assert (await http.get("/history/chat:user.ann", headers=bearer)).status_code == 403
        assert (await http.get("/history/global-chat")).status_code == 401

        await ann.request("message", {"text": "before bob"}, channel="global-chat")
        await ann.request("message", {"to": "bob", "text": "dm 1"}, channel="chat:user.ann")
        async with SocketTestClient(app, subprotocols=[bob_token]) as bob:
            for channel, page in kept.items():
                since = {"channel": channel, "since": page["position"]}
                await bob.emit("subscribe-channel-request", since)
                assert (await bob.receive()).data["recovered"] is True
                if channel == "global-chat":
                    assert (await bob.receive()).event == "channels:presence"
                caught_up = await bob.receive()
                assert caught_up.data["text"] in ("before bob", "dm 1")
                assert caught_up["position"]["offset"] == page["position"]["offset"] + 1
            last_seen = caught_up["position"]
        # bob's connection dropped; what was said meanwhile comes on his next subscription.
        await ann.request("message", {"to": "bob", "text": "dm 2"}, channel="chat:user.ann")
        async with SocketTestClient(app, subprotocols=[bob_token]) as bob:
            since = {"channel": "chat:user.bob", "since": last_seen}
            await bob.emit("subscribe-channel-request", since)
            assert (await bob.receive()).data["recovered"] is True
            missed = await bob.receive()
            assert said(missed) == {"from": "ann", "to": "bob", "text": "dm 2"}
            await bob.assert_no_message()


async def test_the_asyncapi_document_describes_the_demo(http: httpx.AsyncClient) -> None:
    document = (await http.get("/ws/asyncapi.json")).json()
    assert document["channels"]["Inbox"]["address"] == "chat:user.{wildcard}"
    assert document["channels"]["GlobalChat"]["address"] == "global-chat"
    assert "Inbox.message.receive" in document["operations"]


async def test_the_page_and_its_script_are_served_locally(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert "Demo login, no password." in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    script = await http.get("/static/chat.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert 'import { SocketClient } from "/ws/client.js"' in script.text
    assert (await http.get("/static/chat.css")).status_code == 200
    module = await http.get("/ws/client.js")
    assert "export class SocketClient" in module.text


@pytest.mark.parametrize("where", ["memory", "redis"])
async def test_the_directory_knows_logged_in_names_up_to_its_limit(
    where: str, request: pytest.FixtureRequest
) -> None:
    url = None
    if where == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        url = f"{request.getfixturevalue('redis_url')}?prefix={prefix}"
    users = Directory(url, limit=2)
    try:
        assert await users.add("ann") and await users.add("bob")
        assert not await users.add("cy")  # full
        assert await users.add("ann")  # logging in again is fine
        assert await users.exists("bob") and not await users.exists("cy")
    finally:
        await users.aclose()
