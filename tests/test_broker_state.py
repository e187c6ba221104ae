"""History and presence at the broker level: the same behaviour in memory and on Redis.

Two brokers made by one ``make_broker`` are two processes of one deployment (a shared memory
hub, or one Redis under one prefix). Also what a Redis restart does to positions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fastapi_channels import BrokerError, ChannelListener, History, channel
from fastapi_channels.brokers import Broker
from fastapi_channels.brokers.base import (
    Announcements,
    BrokerState,
    Position,
    Retention,
    StoredEntry,
)
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.testing import lifespan
from tests.conftest import BareBroker, Harness, eventually
from tests.redis_support import RedisServer

TIMEOUT = 5.0
KEEP = Retention(size=3, ttl=None, keep=60)
ANNOUNCE = Announcements(join=(b"+", b""), leave=(b"-", b""))


class Inbox:
    """What a broker delivered: ``(topic, data, position or None)``, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes, Position | None]] = asyncio.Queue()

    def plain(self, topic: str, data: bytes) -> None:
        self.queue.put_nowait((topic, data, None))

    def stored(self, topic: str, data: bytes, position: Position) -> None:
        self.queue.put_nowait((topic, data, position))

    async def take(self, count: int) -> list[tuple[str, bytes, Position | None]]:
        async with asyncio.timeout(TIMEOUT):
            return [await self.queue.get() for _ in range(count)]


@pytest.fixture
async def pair(make_broker: Callable[[], Broker]) -> AsyncIterator[list[tuple[Broker, Inbox]]]:
    started = []
    for _ in range(2):
        broker, inbox = make_broker(), Inbox()
        await broker.start(inbox.plain, inbox.stored)
        started.append((broker, inbox))
    yield started
    for broker, _ in started:
        await broker.stop()


async def test_stored_messages_reach_every_process_in_offset_order(
    pair: list[tuple[Broker, Inbox]],
) -> None:
    (a, inbox_a), (b, inbox_b) = pair
    for broker in (a, b):
        await broker.subscribe("c:x")
    sent = await asyncio.gather(
        *(p.publish_stored("c:x", b"%d" % n, KEEP) for n, p in enumerate([a, b, a, b, a]))
    )
    epoch = sent[0].epoch
    assert sorted(p.offset for p in sent) == [1, 2, 3, 4, 5]
    assert {p.epoch for p in sent} == {epoch}
    got_a, got_b = await inbox_a.take(5), await inbox_b.take(5)
    assert got_a == got_b  # one order for every process, the publisher's included
    assert [position for _, _, position in got_a] == [Position(n, epoch) for n in range(1, 6)]


async def test_reads_keep_the_retention(pair: list[tuple[Broker, Inbox]]) -> None:
    (a, _), (b, _) = pair
    empty = await b.read_stored("c:r", KEEP)
    assert (empty.top, empty.entries) == (0, [])
    for n in range(5):
        await a.publish_stored("c:r", b"%d" % n, KEEP)
    stored = await b.read_stored("c:r", KEEP)
    assert stored.epoch == empty.epoch  # the read gave the topic the epoch it keeps
    assert (stored.top, stored.entries) == (5, [StoredEntry(n, b"%d" % (n - 1)) for n in (3, 4, 5)])
    assert (await b.read_stored("c:r", KEEP, after=4)).entries == [StoredEntry(5, b"4")]
    assert (await b.read_stored("c:r", KEEP, after=5)).entries == []
    short = Retention(size=100, ttl=0.2, keep=60)
    await a.publish_stored("c:t", b"soon gone", short)

    async def expired() -> bool:
        return not (await b.read_stored("c:t", short)).entries

    await eventually(expired)
    assert (await a.publish_stored("c:t", b"next", short)).offset == 2


async def test_presence_is_shared_and_announced_once(pair: list[tuple[Broker, Inbox]]) -> None:
    (a, inbox_a), (b, inbox_b) = pair
    for broker in (a, b):
        await broker.subscribe("p:x")
        assert await broker.presence_renew(10) is False  # the first renewal: resync
        assert await broker.presence_renew(10) is True
    assert await a.presence_update("p:x", {"ann": b"A", "bob": b"B"}, [], ANNOUNCE) == (
        ["ann", "bob"],
        [],
    )
    assert await b.presence_update("p:x", {"bob": b"B2"}, [], ANNOUNCE) == ([], [])
    assert await b.presence_members("p:x", ANNOUNCE) == {"ann": b"A", "bob": b"B"}
    assert await a.presence_update("p:x", {}, ["bob", "ann"], ANNOUNCE) == ([], ["ann"])
    await b.presence_sync("p:x", {}, ANNOUNCE)  # bob's last holder lets go
    assert await a.presence_count("p:x", ANNOUNCE) == 0
    expected = [("p:x", data, None) for data in (b"+A", b"+B", b"-A", b"-B")]
    assert await inbox_a.take(4) == expected
    assert await inbox_b.take(4) == expected


async def test_the_members_of_a_dead_process_are_swept(pair: list[tuple[Broker, Inbox]]) -> None:
    (a, inbox_a), (dead, _) = pair
    await a.subscribe("p:d")
    await a.presence_renew(10)
    await dead.presence_renew(0.2)  # and never again
    await dead.presence_update("p:d", {"zed": b"Z"}, [], ANNOUNCE)
    await a.presence_update("p:d", {"ann": b"A"}, [], ANNOUNCE)
    assert await a.presence_sweep({"p:d": 1}, {"p:d": ANNOUNCE}) == []

    async def swept() -> bool:
        return await a.presence_sweep({"p:d": 1}, {"p:d": ANNOUNCE}) == [] and (
            await a.presence_count("p:d", ANNOUNCE) == 1
        )

    await eventually(swept)
    assert [data for _, data, _ in await inbox_a.take(3)] == [b"+Z", b"+A", b"-Z"]
    # A process whose own records differ from what it believes is told to resync.
    assert await a.presence_sweep({"p:d": 2}, {"p:d": ANNOUNCE}) == ["p:d"]


async def test_a_broker_without_the_capabilities_says_so() -> None:
    bare = BareBroker()
    assert bare.capabilities == frozenset()
    with pytest.raises(BrokerError, match="history"):
        await bare.publish_stored("c:x", b"", KEEP)
    with pytest.raises(BrokerError, match="presence"):
        await bare.presence_renew(1)


@channel("log:*")
class Log(ChannelListener):
    history = History(size=10)


async def test_a_redis_restart_without_persistence_starts_a_new_epoch(
    redis_server: Callable[[], RedisServer],
) -> None:
    server = redis_server()
    broker = RedisBroker(server.url, reconnect_delay=(0.02, 0.1), timeout=1.0)
    app = Harness.build(listeners=[Log], broker=broker)
    async with lifespan(app.app), app.client("ann") as ann:
        assert (await ann.subscribe("log:1"))["successful"]
        before = await app.server.broadcast(Log, "log:1", "line", 1)
        assert before is not None
        await ann.receive(TIMEOUT)
        server.stop()
        async with asyncio.timeout(TIMEOUT):
            await broker.wait_for_state(BrokerState.RECONNECTING)
        with pytest.raises(BrokerError, match="neither stored nor sent"):
            await app.server.broadcast(Log, "log:1", "line", "lost")
        await ann.assert_no_message()  # not even this process's subscribers got it
        server.start()
        async with asyncio.timeout(TIMEOUT):
            await broker.wait_for_state(BrokerState.CONNECTED)
        after = await app.server.broadcast(Log, "log:1", "line", 2)
        assert after is not None and after.offset == 1 and after.epoch != before.epoch
        packet = await ann.receive(TIMEOUT)
        assert packet["position"] == {"offset": 1, "epoch": after.epoch}
    again = Harness.build(listeners=[Log], broker=RedisBroker(server.url))
    async with lifespan(again.app), again.client("ann") as ann:
        since: dict[str, Any] = {"offset": before.offset, "epoch": before.epoch}
        await ann.emit("subscribe-channel-request", {"channel": "log:1", "since": since})
        response = await ann.receive(TIMEOUT)
        assert response.data["recovered"] is False
        assert response.data["position"] == {"offset": 1, "epoch": after.epoch}
