"""History and presence at the broker level: what is specific to one broker, and the stores' types.

What every store must do is the contract suite's (``tests/contract/test_history.py`` and
``test_presence.py``), run on every broker that is a `HistoryStore` or a `PresenceStore`. Here: the
stores are found by type, a `MemoryHub`'s clock drives its expiries, and what a Redis restart does
to positions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from fastapi_channels import BrokerError, ChannelListener, History, channel
from fastapi_channels.brokers import Broker, HistoryStore, MemoryBroker, MemoryHub, PresenceStore
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.brokers.stores import Announcements, Position, Retention
from fastapi_channels.testing import lifespan
from tests.conftest import Harness
from tests.pubsub_broker import PubSubBroker
from tests.redis_support import RedisServer

TIMEOUT = 5.0
ANNOUNCE = Announcements(join=(b"+", b""), leave=(b"-", b""))


@pytest.mark.parametrize(
    ("make", "stores"),
    [
        (MemoryBroker, {HistoryStore, PresenceStore}),
        (lambda: RedisBroker("redis://127.0.0.1:6379/0"), {HistoryStore, PresenceStore}),
        (PubSubBroker, set()),
    ],
    ids=["memory", "redis", "pubsub-only"],
)
def test_the_stores_a_broker_keeps_are_found_by_type(
    make: Callable[[], Broker], stores: set[type]
) -> None:
    broker = make()
    assert {store for store in (HistoryStore, PresenceStore) if isinstance(broker, store)} == stores
    assert not hasattr(broker, "capabilities")  # no strings to keep in step with the types


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_memory_hub_s_clock_drives_its_expiries() -> None:
    clock = Clock()
    hub = MemoryHub(clock)
    a, b = MemoryBroker(hub), MemoryBroker(hub)
    short = Retention(size=10, ttl=5, keep=60)
    first = await a.publish_stored("c:t", b"old", short)
    clock.now += 6  # past the ttl: the message goes, the position stays
    assert (await b.read_stored("c:t", short)).entries == []
    assert await a.publish_stored("c:t", b"new", short) == Position(2, first.epoch)
    clock.now += 61  # past keep: a new epoch
    again = await a.publish_stored("c:t", b"newer", short)
    assert again.offset == 1 and again.epoch != first.epoch

    await a.presence_renew(10)
    await b.presence_renew(30)
    await a.presence_update("p:x", {"ann": b"A"}, [], ANNOUNCE)
    await b.presence_update("p:x", {"bob": b"B"}, [], ANNOUNCE)
    clock.now += 11  # a missed its renewal
    assert await b.presence_members("p:x", ANNOUNCE) == {"bob": b"B"}
    assert await a.presence_renew(10) is False


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


async def test_a_redis_that_goes_away_is_noticed_at_once_not_at_the_next_ping(
    redis_server: Callable[[], RedisServer],
) -> None:
    server = redis_server()
    broker = RedisBroker(server.url, reconnect_delay=(0.02, 0.1), ping_interval=60.0)
    await broker.start(lambda topic, data: None)
    try:
        await broker.subscribe("c:x")
        server.stop()  # the connection closes: the reader sees it, no ping is needed
        async with asyncio.timeout(10):  # far below the 60 s ping interval
            await broker.wait_for_state(BrokerState.RECONNECTING, BrokerState.CONNECTING)
        server.start()
        async with asyncio.timeout(10):
            await broker.wait_for_state(BrokerState.CONNECTED)
    finally:
        await broker.stop()
