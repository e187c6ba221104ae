"""The Redis broker behind Redis Sentinel: it follows the master across a failover.

Real processes (``tests/redis_ha.py``): a master, a replica and a Sentinel. The contract suite
runs on the Sentinel broker too (``tests/contract/``); here, what a failover does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from fastapi_channels.brokers import create_broker
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.wire.errors import ConfigurationError
from tests.failover_checks import (
    both_ways,
    history_and_presence_survive,
    two_subscribed,
    under_traffic,
)
from tests.redis_ha import SentinelGroup

TIMEOUT = 5.0
FAILOVER_TIMEOUT = 15.0
"""The most a failover may take in these tests, from the order to messages flowing again."""
FAST: dict[str, Any] = {"reconnect_delay": (0.02, 0.2), "ping_interval": 0.5, "timeout": 1.0}


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


@contextlib.contextmanager
def _stopped(group: SentinelGroup) -> Iterator[None]:
    group.master.stop()
    yield


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
    with pytest.raises(ConfigurationError, match="RedisClusterBroker"):
        RedisBroker("redis+cluster://127.0.0.1:7000")  # a cluster's own broker: see below


async def test_broadcasts_flow_again_on_every_process_after_a_failover_under_traffic(
    sentinel_group: SentinelGroup, brokers: Callable[..., RedisBroker]
) -> None:
    a, topics_a, b, topics_b = await two_subscribed(brokers, "traffic")

    old = sentinel_group.master_port()
    async with under_traffic(a, b):
        began = time.monotonic()
        sentinel_group.failover()
        await asyncio.gather(followed(a), followed(b))
        await both_ways(a, topics_a, b, topics_b)
        elapsed = time.monotonic() - began
    new = sentinel_group.master_port()
    assert new != old
    async with aioredis.Redis(port=new) as client:  # the subscriptions moved with the master
        numsub = dict(await client.pubsub_numsub(a.channel("t"), a.channel("traffic")))
        assert numsub == {a.channel("t"): 2, a.channel("traffic"): 2}
    print(f"\nSentinel failover, order to messages flowing on both processes: {elapsed:.2f} s")
    assert elapsed < FAILOVER_TIMEOUT


async def test_history_and_presence_follow_a_master_that_dies(
    sentinel_group: SentinelGroup, brokers: Callable[..., RedisBroker]
) -> None:
    elapsed = await history_and_presence_survive(
        brokers(),
        brokers(),
        lambda: _stopped(sentinel_group),  # SIGTERM: the master and its connections are gone
        followed,
    )
    print(f"\nSentinel failover after the master died, to a stored broadcast: {elapsed:.2f} s")
    assert elapsed < FAILOVER_TIMEOUT
