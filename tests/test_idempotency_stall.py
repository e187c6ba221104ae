"""A Redis that stalls: the first attempt's outcome is unknown, the client retries with the same
key, and the other process's subscribers receive the message exactly once.

Process A (the app, under uvicorn) reaches the shared Redis through a proxy that holds Redis's
answers back (``TcpProxy.hold``): the publish script runs in Redis, but A's broker hears nothing
within its timeout, so the handler's broadcast fails with ``OutcomeUnknown`` and the client is
answered ``outcome-unknown``. Process B is a Redis broker connected directly, subscribed to the
channel: it sees the first attempt's message at once. Once A gave up on that connection the
proxy lets answers through again; the client's retry (same key, new id) then publishes nothing,
and its reply carries the first message's position on a history channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI

from fastapi_channels import ChannelListener, Channels, History, SocketPacket, channel
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.brokers.stores import Position
from fastapi_channels.client import ChannelsClient
from tests.live import live_server
from tests.proxy import TcpProxy, tcp_proxy

TIMEOUT = 10.0
RUNS: dict[str | None, int] = {}


@channel("room:*")
class Room(ChannelListener):
    @channel.on("say")
    async def say(self, packet: SocketPacket) -> dict[str, Any]:
        RUNS[packet.key] = RUNS.get(packet.key, 0) + 1
        position = await self.broadcast(self.channel_name, "said", packet.data)
        return {"offset": None if position is None else position.offset}


@channel("log:*")
class Log(Room):
    history = History(size=10)


class Inbox:
    """What process B delivered on the channel's topic."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Position | None]] = asyncio.Queue()

    def plain(self, topic: str, data: bytes) -> None:
        self.queue.put_nowait((data, None))

    def stored(self, topic: str, data: bytes, position: Position) -> None:
        self.queue.put_nowait((data, position))

    async def get(self) -> tuple[bytes, Position | None]:
        async with asyncio.timeout(TIMEOUT):
            return await self.queue.get()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with tcp_proxy(port) as proxy:
        yield proxy


@pytest.mark.parametrize("name", ["room:stall", "log:stall"])
async def test_an_unknown_outcome_retried_with_the_same_key_is_delivered_once(
    name: str, proxy: TcpProxy, redis_url: str, redis_prefix: str
) -> None:
    stalled = RedisBroker(f"redis://127.0.0.1:{proxy.port}/0", prefix=redis_prefix, timeout=0.5)
    channels = Channels(listeners=[Room, Log], broker=stalled)
    app = FastAPI()
    app.include_router(channels.router)
    other, inbox = RedisBroker(redis_url, prefix=redis_prefix), Inbox()
    other.deliver_stored_to(inbox.stored)
    await other.start(inbox.plain)
    try:
        await other.subscribe("c:" + name)
        async with (
            live_server(app) as address,
            ChannelsClient(f"ws://{address}/ws", request_timeout=5.0) as client,
        ):
            room = await client.subscribe(name)
            # A first keyed send opens A's store connection, so the stall below hits a
            # command already sent, not the connection's handshake (that would be a certain
            # failure: broker-unavailable).
            await room.request("say", "warm-up", key=f"warm-{name}")
            assert b'"warm-up"' in (await inbox.get())[0]
            proxy.ended.clear()
            proxy.hold()
            sending = asyncio.ensure_future(
                room.request("say", "once", key=f"k-{name}", retries=3, retry_delay=0.05)
            )
            data, position = await inbox.get()  # the first attempt ran in Redis
            assert b'"once"' in data
            async with asyncio.timeout(TIMEOUT):
                await proxy.ended.wait()  # A gave up on the stalled connection: outcome unknown
            proxy.release()
            async with asyncio.timeout(TIMEOUT):
                answer = await sending
            assert RUNS[f"k-{name}"] == 2  # the handler ran twice: one unknown, one retry
            assert answer == {"offset": None if position is None else position.offset}
            await room.request("say", "fence")
            fence, _ = await inbox.get()  # the next delivery: the retry delivered nothing
            assert b'"fence"' in fence
    finally:
        await other.stop()
