"""Requests with retries: the Python client sends the same idempotency key again after an
``outcome-unknown``, and the subscribers get the message once (``tests/client_app.py``'s
``say-flaky`` fails the first attempt of each key after broadcasting)."""

from __future__ import annotations

import pytest

from fastapi_channels import ReplyError
from fastapi_channels.client import ChannelsClient
from tests.client_app import FLAKY_ATTEMPTS


def client(address: str) -> ChannelsClient:
    return ChannelsClient(f"ws://{address}/ws", request_timeout=5.0)


async def test_a_retried_request_is_delivered_once(address: str) -> None:
    async with client(address) as c, client(address) as watcher:
        room = await c.subscribe("public:retry")
        seen = await watcher.subscribe("public:retry")
        async with seen.packets("said") as said:
            answer = await room.request("say-flaky", "once", retries=2, retry_delay=0.01)
            key = answer["key"]
            assert answer == {"key": key, "attempts": 2}
            assert len(key) == 32 and FLAKY_ATTEMPTS[key] == 2
            assert (await said.get(timeout=5)).data == "once"
            await room.request("say", "fence")  # the next delivery: nothing came in between
            assert (await said.get(timeout=5)).data == "fence"


async def test_a_given_key_is_the_one_sent(address: str) -> None:
    async with client(address) as c:
        room = await c.subscribe("public:retry-key")
        answer = await room.request("say-flaky", 1, key="mine-1", retries=1, retry_delay=0.01)
        assert answer == {"key": "mine-1", "attempts": 2}


async def test_without_retries_the_error_is_raised(address: str) -> None:
    async with client(address) as c:
        room = await c.subscribe("public:retry-none")
        with pytest.raises(ReplyError) as caught:
            await room.request("say-flaky", 1, key="no-retry")
        assert caught.value.code == "outcome-unknown"
