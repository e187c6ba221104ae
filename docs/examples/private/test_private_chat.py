"""Tests of the private chat (private_chat.py), as an app's own tests would be."""

from __future__ import annotations

# --8<-- [start:fixtures]
from collections.abc import AsyncIterator

import httpx
import pytest
from private_chat import app, auth

from fastapi_channels.testing import SocketTestClient, lifespan


@pytest.fixture(autouse=True)
async def running() -> AsyncIterator[None]:
    """Every test runs with the app started: its lifespan starts the channels server."""
    async with lifespan(app):
        yield


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app, in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def token_of(username: str) -> str:
    """A valid token for `username`, without going through `/login`."""
    return auth.issue(username, lifetime=60)


def connect_as(username: str) -> SocketTestClient:
    """A connection offering `username`'s token as its subprotocol, as browsers do."""
    return SocketTestClient(app, subprotocols=[token_of(username)])


# --8<-- [end:fixtures]


# --8<-- [start:private]
async def test_only_the_two_members_may_join_a_conversation() -> None:
    async with connect_as("ann") as ann, connect_as("eve") as eve:
        assert (await ann.subscribe("dm:ann.bob"))["successful"]
        refused = await eve.subscribe("dm:ann.bob")
        assert refused == {"channel": "dm:ann.bob", "successful": False, "reason": "not authorised"}
        assert not (await ann.subscribe("dm:bob.ann"))["successful"]  # not the channel's name


async def test_a_message_reaches_both_members_and_nobody_else() -> None:
    async with connect_as("ann") as ann, connect_as("bob") as bob, connect_as("eve") as eve:
        for client in (ann, bob):
            assert (await client.subscribe("dm:ann.bob"))["successful"]
        reply = await ann.request("message", {"text": "lunch?"}, channel="dm:ann.bob")
        assert reply == {"author": "ann", "text": "lunch?"}
        for client in (ann, bob):
            packet = await client.receive()
            assert (packet.event, packet.channel) == ("message", "dm:ann.bob")
            assert packet.data == {"author": "ann", "text": "lunch?"}
        assert (await bob.receive()).event == "notification"  # to every connection of bob's
        await eve.assert_no_message()


# --8<-- [end:private]


# --8<-- [start:anonymous]
async def test_without_a_valid_token_nobody_joins() -> None:
    async with SocketTestClient(app) as anonymous:  # no token: an anonymous connection
        refused = await anonymous.subscribe("dm:ann.bob")
        assert refused["reason"] == "authentication required"

    forged = SocketTestClient(app, subprotocols=["not-a-token"])
    assert await forged.connect() == {
        "event": "disconnect",
        "data": {"reason": "authentication failed"},
    }
    assert (await forged.receive_closed())[0] == 1000


# --8<-- [end:anonymous]


# --8<-- [start:http]
async def test_log_in_over_http(http: httpx.AsyncClient) -> None:
    wrong = await http.post("/login", json={"username": "ann", "password": "guess"})
    assert wrong.status_code == 401
    login = await http.post("/login", json={"username": "ann", "password": "correct horse"})
    token = login.json()["access_token"]
    me = await http.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json() == {"id": "ann", "name": "Ann"}
    async with SocketTestClient(app, subprotocols=[token]) as ann:
        assert (await ann.subscribe("dm:ann.bob"))["successful"]


async def test_a_message_sent_over_http(http: httpx.AsyncClient) -> None:
    async with connect_as("ann") as ann:
        assert (await ann.subscribe("dm:ann.bob"))["successful"]
        as_bob = {"Authorization": f"Bearer {token_of('bob')}"}
        line = {"text": "on my way"}
        sent = await http.post("/conversations/ann/messages", json=line, headers=as_bob)
        assert sent.json() == {"author": "bob", "text": "on my way"}
        assert (await ann.receive()).data == {"author": "bob", "text": "on my way"}
        assert (await ann.receive()).data == {"from": "bob", "text": "on my way"}  # notification

    anonymous = await http.post("/conversations/ann/messages", json={"text": "hi"})
    assert anonymous.status_code == 401


# --8<-- [end:http]


async def test_bad_data_is_refused_before_the_handler_runs() -> None:
    async with connect_as("bob") as bob:
        assert (await bob.subscribe("dm:ann.bob"))["successful"]
        await bob.emit("message", {"text": ""}, channel="dm:ann.bob")
        error = await bob.receive()
        assert error.event == "channels:error"
        assert error.data["code"] == "invalid-data"
        assert error.data["errors"][0]["loc"] == ["text"]


async def test_contacts_and_typing() -> None:
    async with connect_as("ann") as ann, connect_as("bob") as bob:
        assert await ann.request("contacts") == {"bob": "dm:ann.bob", "eve": "dm:ann.eve"}
        for client in (ann, bob):
            assert (await client.subscribe("dm:ann.bob"))["successful"]
        await bob.emit("typing", channel="dm:ann.bob")
        for client in (ann, bob):
            assert (await client.receive()).data == {"author": "bob"}
