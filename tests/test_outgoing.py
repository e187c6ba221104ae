"""Outgoing filters: per-recipient change or drop, and encode-once without one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic_core import to_json

import fastapi_channels.wire.protocol
from fastapi_channels import DROP, ChannelListener, ConfigurationError, SocketConnection, channel
from tests.conftest import Start


@channel("plain.*")
class Plain(ChannelListener):
    pass


@channel("team.*")
class Team(ChannelListener):
    @channel.outgoing("profile", "secret")
    def hide(self, connection: SocketConnection, event: str, data: Any) -> Any:
        user = connection.user["id"]
        if event == "secret":
            return data if user == "boss" else DROP
        if user == data["id"] or user == "boss":
            return data
        return {**data, "email": None, "seen_by": user, "team": self.wildcard}


@channel("fragile")
class Fragile(ChannelListener):
    @channel.outgoing()
    def fail_for_eve(self, connection: SocketConnection, event: str, data: Any) -> Any:
        if connection.user["id"] == "eve":
            raise RuntimeError("filter bug")
        return data


@pytest.fixture
async def harness(start: Start) -> Any:
    return await start(listeners=[Plain, Team, Fragile])


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every packet the server encodes from here on."""
    seen: list[Any] = []

    def counting(value: Any, *args: Any, **kwargs: Any) -> bytes:
        seen.append(value)
        return to_json(value, *args, **kwargs)

    monkeypatch.setattr(fastapi_channels.wire.protocol, "to_json", counting)
    yield seen


async def clients(harness: Any, channel_name: str, *names: str) -> list[Any]:
    result = []
    for name in names:
        client = harness.client(name)
        await client.__aenter__()
        assert (await client.subscribe(channel_name))["successful"]
        result.append(client)
    return result


async def test_without_a_filter_a_broadcast_is_encoded_once(
    harness: Any, encodes: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    members = await clients(harness, "plain.1", "a", "b", "c", "d")
    pushed: list[str] = []
    push = SocketConnection.push

    def recording(self: SocketConnection, frame: str) -> bool:
        pushed.append(frame)
        return push(self, frame)

    monkeypatch.setattr(SocketConnection, "push", recording)
    encodes.clear()
    await harness.server.broadcast(Plain, "plain.1", "note", {"n": 1})
    for client in members:
        assert await client.receive() == {"event": "note", "channel": "plain.1", "data": {"n": 1}}
    assert len(encodes) == 1
    assert len(pushed) == 4 and all(frame is pushed[0] for frame in pushed)  # one shared frame
    for client in members:
        await client.close()


async def test_a_filter_changes_data_per_recipient_and_encodes_only_the_changes(
    harness: Any, encodes: list[Any]
) -> None:
    owner, boss, other = await clients(harness, "team.red", "u1", "boss", "u2")
    encodes.clear()
    profile = {"id": "u1", "email": "u1@example.org"}
    await harness.server.broadcast(Team, "team.red", "profile", profile)
    expected = {"event": "profile", "channel": "team.red", "data": profile}
    assert await owner.receive() == expected
    assert await boss.receive() == expected
    assert await other.receive() == {
        "event": "profile",
        "channel": "team.red",
        "data": {
            "id": "u1",
            "email": None,
            "seen_by": "u2",
            "team": "red",
        },
    }
    assert len(encodes) == 2  # the broadcast, and one re-encoding for u2
    for client in (owner, boss, other):
        await client.close()


async def test_a_filter_drops_for_some_recipients(harness: Any) -> None:
    boss, worker = await clients(harness, "team.red", "boss", "u1")
    await harness.server.broadcast(Team, "team.red", "secret", "plans")
    assert (await boss.receive()).data == "plans"
    await worker.assert_no_message()
    for client in (boss, worker):
        await client.close()


async def test_events_the_filter_does_not_name_pass_untouched(
    harness: Any, encodes: list[Any]
) -> None:
    a, b = await clients(harness, "team.red", "u1", "u2")
    encodes.clear()
    await harness.server.broadcast(Team, "team.red", "chat", {"id": "u9", "email": "x"})
    for client in (a, b):
        assert (await client.receive()).data == {"id": "u9", "email": "x"}
    assert len(encodes) == 1
    for client in (a, b):
        await client.close()


async def test_sending_to_a_user_via_a_channel_is_filtered_too(harness: Any) -> None:
    (worker,) = await clients(harness, "team.red", "u2")
    await harness.server.send_to_user_via_channel("u2", Team, "team.red", "secret", "plans")
    await harness.server.send_to_user_via_channel(
        "u2", Team, "team.red", "profile", {"id": "u1", "email": "e"}
    )
    assert (await worker.receive()).data["email"] is None
    await worker.assert_no_message()
    await worker.close()


async def test_a_failing_filter_drops_only_for_that_recipient(
    harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    eve, bob = await clients(harness, "fragile", "eve", "bob")
    with caplog.at_level(logging.ERROR, logger="fastapi_channels.outgoing"):
        await harness.server.broadcast(Fragile, "fragile", "note", 1)
        assert (await bob.receive()).data == 1
        await eve.assert_no_message()
    assert "outgoing filter failed" in caplog.text
    for client in (eve, bob):
        await client.close()


def test_filter_declaration_errors() -> None:
    with pytest.raises(ConfigurationError, match=r"Async\.hook must be a plain \(not async\)"):

        @channel("async")
        class Async(ChannelListener):
            @channel.outgoing()
            async def hook(self, connection: Any, event: str, data: Any) -> Any: ...

    with pytest.raises(ConfigurationError, match=r"Arity\.hook must take \(self, connection, e"):

        @channel("arity")
        class Arity(ChannelListener):
            @channel.outgoing()
            def hook(self, connection: Any) -> Any: ...

    with pytest.raises(ConfigurationError, match="two outgoing filters"):

        @channel("twice")
        class Twice(ChannelListener):
            @channel.outgoing()
            def one(self, connection: Any, event: str, data: Any) -> Any: ...

            @channel.outgoing()
            def two(self, connection: Any, event: str, data: Any) -> Any: ...

    with pytest.raises(ConfigurationError, match="takes event names"):
        channel.outgoing("")
