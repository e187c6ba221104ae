"""What a Redis failover must leave intact, checked the same way behind Sentinel and on a cluster.

`Topics` records what a broker delivered; `history_and_presence_survive` runs two apps
("processes") through a failover of the master holding a history and a presence channel;
`under_traffic`, `two_subscribed` and `both_ways` set up and check the failover of two brokers
publishing without pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

from fastapi_channels import BrokerError, ChannelListener, History, channel
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.testing import lifespan
from tests.conftest import Harness, eventually

TIMEOUT = 5.0


class Topics:
    """What a broker delivered, one queue per topic, with a timeout on every wait."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[bytes]] = {}

    def __call__(self, topic: str, data: bytes) -> None:
        self.queues.setdefault(topic, asyncio.Queue()).put_nowait(data)

    async def get(self, topic: str) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            return await self.queues.setdefault(topic, asyncio.Queue()).get()


@channel("log:*")
class Log(ChannelListener):
    history = History(size=100)


@channel("room:*")
class Room(ChannelListener):
    presence = True


async def history_and_presence_survive(
    first: RedisBroker,
    second: RedisBroker,
    failure: Callable[[], AbstractContextManager[Any]],
    followed: Callable[[RedisBroker], Awaitable[None]],
    *,
    traffic: bool = False,
) -> float:
    """Fail the master of ``log:1`` (``failure()``) under two apps; return the seconds from the
    failure to a stored broadcast, after checking what clients are told. With ``traffic``,
    both brokers publish without pause meanwhile (`under_traffic`).

    A stored broadcast after it has a new epoch; a client coming back from before it is told
    it did not recover; both processes' member lists are whole again.
    """
    one, two = (
        Harness.build(listeners=[Log, Room], broker=broker, presence_timeout=3)
        for broker in (first, second)
    )
    async with (
        lifespan(one.app),
        lifespan(two.app),
        one.client("ann") as ann,
        two.client("bob") as bob,
    ):
        assert (await ann.subscribe("log:1"))["successful"]
        assert (await bob.subscribe("room:1"))["successful"]
        await bob.receive(TIMEOUT)  # the member list
        assert (await ann.subscribe("room:1"))["successful"]
        await ann.receive(TIMEOUT)  # the member list
        await bob.receive(TIMEOUT)  # ann joins
        before = await two.server.broadcast(Log, "log:1", "line", "before")
        assert before is not None
        assert (await ann.receive(TIMEOUT)).data == "before"

        began = time.monotonic()
        async with contextlib.AsyncExitStack() as load:
            if traffic:
                await load.enter_async_context(under_traffic(first, second))
            load.enter_context(failure())
            await asyncio.gather(followed(first), followed(second))
            after = await two.server.broadcast(Log, "log:1", "line", "after")
            elapsed = time.monotonic() - began
            assert after is not None and after.epoch != before.epoch  # a new master: new epoch
            packet = await ann.receive(TIMEOUT)
            for _ in range(10):  # bounded: room:1's presence traffic around the failover
                if packet.get("channel") == "log:1":
                    break
                if packet.event == "channels:presence":  # the member list, after reconnecting
                    members = sorted(m["id"] for m in packet.data["members"])
                    assert members == ["ann", "bob"] or packet.data.get("partial"), packet
                else:  # what the new master lacked (asynchronous replication), put back
                    assert packet.event in {"channels:join", "channels:leave"}, packet
                    assert packet.data["member"]["id"] in {"ann", "bob"}, packet
                packet = await ann.receive(TIMEOUT)
            assert packet.data == "after"
            assert packet["position"] == {"offset": after.offset, "epoch": after.epoch}

            async with one.client("cy") as cy:  # coming back from before the failover: told
                since = {"offset": before.offset, "epoch": before.epoch}
                await cy.emit("subscribe-channel-request", {"channel": "log:1", "since": since})
                response = await cy.receive(TIMEOUT)
                assert response.data["recovered"] is False
                assert response.data["position"] == {"offset": after.offset, "epoch": after.epoch}

            async def everyone_present() -> bool:
                # The new master holds what was replicated; each process's sweep (every
                # presence_timeout / 3) puts back what was not: poll until both agree.
                members = [await app.server.presence("room:1") for app in (one, two)]
                return all(sorted(m["id"] for m in found) == ["ann", "bob"] for found in members)

            await eventually(everyone_present, within=TIMEOUT)
    return elapsed


@contextlib.asynccontextmanager
async def under_traffic(*brokers: RedisBroker) -> AsyncIterator[None]:
    """Each broker publishes on ``traffic`` without pause (but for a short pacing), failures
    ignored, until the block ends."""
    stop = asyncio.Event()

    async def traffic(broker: RedisBroker) -> None:
        while not stop.is_set():
            with contextlib.suppress(BrokerError):
                await broker.publish("traffic", b"x" * 100)
            await asyncio.sleep(0.005)  # pacing, not synchronisation

    senders = [asyncio.create_task(traffic(broker)) for broker in brokers]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*senders)


async def two_subscribed(
    make: Callable[[], RedisBroker], *topics: str
) -> tuple[RedisBroker, Topics, RedisBroker, Topics]:
    """Start two brokers subscribed to ``topics`` and ``t``; check ``t`` carries a message."""
    topics_a, topics_b = Topics(), Topics()
    a, b = make(), make()
    await a.start(topics_a)
    await b.start(topics_b)
    for broker in (a, b):
        for topic in (*topics, "t"):
            await broker.subscribe(topic)
    await a.publish("t", b"before")
    assert [await topics_a.get("t"), await topics_b.get("t")] == [b"before"] * 2
    return a, topics_a, b, topics_b


async def both_ways(a: RedisBroker, topics_a: Topics, b: RedisBroker, topics_b: Topics) -> None:
    """Check that a message from each broker on ``t`` reaches both."""
    await a.publish("t", b"from a")
    assert [await topics_a.get("t"), await topics_b.get("t")] == [b"from a"] * 2
    await b.publish("t", b"from b")
    assert [await topics_a.get("t"), await topics_b.get("t")] == [b"from b"] * 2
