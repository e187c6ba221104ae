"""Idempotency keys: a handler's broadcasts for a packet with a ``key`` are delivered once.

On both brokers; the Redis stall (outcome unknown, then a retry) is in
``tests/test_idempotency_stall.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from fastapi_channels import ChannelListener, History, ReplyError, channel
from tests.conftest import Harness, Start


@channel("room:*")
class Room(ChannelListener):
    @channel.on("say")
    async def say(self, data: Any) -> None:
        await self.broadcast(self.channel_name, "said", data)
        await self.broadcast(self.channel_name, "echo", data)


@channel("log:*")
class Log(ChannelListener):
    history = History(size=10)

    @channel.on("append")
    async def append(self, data: Any) -> dict[str, Any] | None:
        position = await self.broadcast(self.channel_name, "line", data)
        return None if position is None else {"offset": position.offset}


@pytest.fixture
async def harness(start: Start) -> Harness:
    return await start(listeners=[Room, Log])


async def test_a_retried_packet_broadcasts_once(harness: Harness) -> None:
    async with harness.client() as client:
        await client.subscribe("room:1")
        for _ in range(2):
            await client.request("say", "hi", "room:1", key="k-1")
        assert [(p.event, p.data) for p in [await client.receive(), await client.receive()]] == [
            ("said", "hi"),
            ("echo", "hi"),
        ]
        await client.request("say", "next", "room:1")  # no key: delivered
        assert (await client.receive()).data == "next"


async def test_another_connection_with_the_same_key_is_deduplicated(harness: Harness) -> None:
    async with harness.client() as first, harness.client() as second:
        await first.subscribe("room:1")
        await second.subscribe("room:1")
        await first.request("say", "hi", "room:1", key="shared")
        await second.request("say", "hi", "room:1", key="shared")
        await second.request("say", "after", "room:1")
        events = [(await second.receive()).data for _ in range(4)]
        assert events == ["hi", "hi", "after", "after"]


async def test_a_stored_retry_answers_the_first_position(harness: Harness) -> None:
    async with harness.client() as client:
        await client.subscribe("log:1")
        first = await client.request("append", "a", "log:1", key="once")
        again = await client.request("append", "a", "log:1", key="once")
        assert first == again == {"offset": 1}
        page = await harness.server.history("log:1")
        assert [m.data for m in page.messages] == ["a"]


async def test_an_explicit_key_on_the_server(harness: Harness) -> None:
    async with harness.client() as client:
        await client.subscribe("room:2")
        await harness.server.broadcast("room:2", "said", 1, key="x")
        await harness.server.broadcast("room:2", "said", 1, key="x")
        await harness.server.broadcast("room:2", "said", 2)
        assert [(await client.receive()).data for _ in range(2)] == [1, 2]


@pytest.mark.parametrize("key", ["", "a b", "x" * 65, 5, "tab\there"])
async def test_a_malformed_key_is_an_invalid_packet(harness: Harness, key: Any) -> None:
    async with harness.client() as client:
        await client.subscribe("room:1")
        with pytest.raises(ReplyError) as caught:
            await client.request("say", "hi", "room:1", key=key)
        assert caught.value.code == "invalid-packet"
        await client.assert_no_message()
