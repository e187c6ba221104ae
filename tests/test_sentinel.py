"""The Redis broker behind Redis Sentinel: it follows the master across a failover.

Real processes (``tests/redis_ha.py``): a master, a replica and a Sentinel. The contract suite
runs on the Sentinel broker too (``tests/contract/``); here, what a failover does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from fastapi_channels import BrokerError, ChannelListener, History, channel
from fastapi_channels.brokers import create_broker
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.testing import lifespan
from fastapi_channels.wire.errors import ConfigurationError
from tests.conftest import Harness, eventually
from tests.redis_ha import SentinelGroup

TIMEOUT = 5.0
FAILOVER_TIMEOUT = 15.0
"""The most a failover may take in these tests, from the order to messages flowing again."""
FAST: dict[str, Any] = {"reconnect_delay": (0.02, 0.2), "ping_interval": 0.5, "timeout": 1.0}


class Topics:
    """What a broker delivered, one queue per topic, with a timeout on every wait."""

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue[bytes]] = {}

    def __call__(self, topic: str, data: bytes) -> None:
        self.queues.setdefault(topic, asyncio.Queue()).put_nowait(data)

    async def get(self, topic: str) -> bytes:
        async with asyncio.timeout(TIMEOUT):
            return await self.queues.setdefault(topic, asyncio.Queue()).get()


@pytest.fixture
async def brokers(sentinel_group: SentinelGroup) -> AsyncIterator[Callable[..., RedisBroker]]:
    """Makes Sentinel brokers, as processes of one deployment, and stops them at the end."""
    made: list[RedisBroker] = []

    def make(**options: Any) -> RedisBroker:
        broker = RedisBroker(sentinel_group.url, prefix="sentinel-test", **{**FAST, **options})
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.stop()


async def followed(broker: RedisBroker) -> None:
    """Wait until ``broker`` noticed the failover and reached the new master."""
    async with asyncio.timeout(FAILOVER_TIMEOUT):
        await broker.wait_for_state(BrokerState.RECONNECTING)
        await broker.wait_for_state(BrokerState.CONNECTED)


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    url = "redis+sentinel://:secret@s1:26379,s2,[::1]:26380/mymaster/2?prefix=shop"
    broker = create_broker(url)
    assert isinstance(broker, RedisBroker)
    assert broker.prefix == "shop"
    assert isinstance(create_broker("rediss+sentinel://s1/mymaster"), RedisBroker)
    with pytest.raises(ConfigurationError, match="/service or /service/db"):
        RedisBroker("redis+sentinel://s1:26379")
    with pytest.raises(ConfigurationError, match="at least one host"):
        RedisBroker("redis+sentinel:///mymaster")
    with pytest.raises(ConfigurationError, match="unknown broker URL scheme"):
        create_broker("redis+cluster://127.0.0.1:7000")  # not built yet: see architecture.md


async def test_broadcasts_flow_again_on_every_process_after_a_failover_under_traffic(
    sentinel_group: SentinelGroup, brokers: Callable[..., RedisBroker]
) -> None:
    topics_a, topics_b = Topics(), Topics()
    a, b = brokers(), brokers()
    await a.start(topics_a)
    await b.start(topics_b)
    for broker in (a, b):
        await broker.subscribe("traffic")
        await broker.subscribe("t")
    await a.publish("t", b"before")
    assert [await topics_a.get("t"), await topics_b.get("t")] == [b"before"] * 2

    stop = asyncio.Event()

    async def traffic(broker: RedisBroker) -> None:
        """Publish without pause (but for a short pacing) until told to stop."""
        while not stop.is_set():
            with contextlib.suppress(BrokerError):
                await broker.publish("traffic", b"x" * 100)
            await asyncio.sleep(0.005)  # pacing, not synchronisation

    old = sentinel_group.master_port()
    senders = [asyncio.create_task(traffic(broker)) for broker in (a, b)]
    try:
        began = time.monotonic()
        sentinel_group.failover()
        await asyncio.gather(followed(a), followed(b))
        await a.publish("t", b"from a")
        assert [await topics_a.get("t"), await topics_b.get("t")] == [b"from a"] * 2
        await b.publish("t", b"from b")
        assert [await topics_a.get("t"), await topics_b.get("t")] == [b"from b"] * 2
        elapsed = time.monotonic() - began
    finally:
        stop.set()
        await asyncio.gather(*senders)
    new = sentinel_group.master_port()
    assert new != old
    async with aioredis.Redis(port=new) as client:  # the subscriptions moved with the master
        numsub = dict(await client.pubsub_numsub(a.channel("t"), a.channel("traffic")))
        assert numsub == {a.channel("t"): 2, a.channel("traffic"): 2}
    print(f"\nSentinel failover, order to messages flowing on both processes: {elapsed:.2f} s")
    assert elapsed < FAILOVER_TIMEOUT


@channel("log:*")
class Log(ChannelListener):
    history = History(size=100)


@channel("room:*")
class Room(ChannelListener):
    presence = True


async def test_history_and_presence_follow_a_master_that_dies(
    sentinel_group: SentinelGroup, brokers: Callable[..., RedisBroker]
) -> None:
    first, second = brokers(), brokers()
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
        sentinel_group.master.stop()  # SIGTERM: the master and its connections are gone
        await asyncio.gather(followed(first), followed(second))
        after = await two.server.broadcast(Log, "log:1", "line", "after")
        elapsed = time.monotonic() - began
        assert after is not None and after.epoch != before.epoch  # a new master, a new epoch
        packet = await ann.receive(TIMEOUT)
        for _ in range(10):  # bounded: room:1's presence traffic around the failover, if any
            if packet.get("channel") == "log:1":
                break
            if packet.event == "channels:presence":  # the member list again, after reconnecting
                members = sorted(m["id"] for m in packet.data["members"])
                assert members == ["ann", "bob"] or packet.data.get("partial"), packet
            else:  # what the new master lacked (asynchronous replication), swept and put back
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
            # presence_timeout / 3) puts back what was not: poll until both processes agree.
            members = [await app.server.presence("room:1") for app in (one, two)]
            return all(sorted(m["id"] for m in found) == ["ann", "bob"] for found in members)

        await eventually(everyone_present, within=TIMEOUT)
    print(f"\nSentinel failover after the master died, to a stored broadcast: {elapsed:.2f} s")
    assert elapsed < FAILOVER_TIMEOUT
