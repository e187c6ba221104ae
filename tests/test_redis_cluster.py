"""The Redis Cluster broker: sharded pub/sub across shards, and what a shard's failover does.

Real processes (``tests/redis_cluster.py``): three masters with a replica each, one cluster per
session. The contract suite runs on this broker too (``tests/contract/``, kind
``redis-cluster``), and the cross-process tests (``tests/test_multiprocess.py``); here, the URL,
the spreading of topics over shards, a shard master dying under traffic, and a slot moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from fastapi_channels import BrokerError
from fastapi_channels.brokers import create_broker
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.brokers.redis_cluster import RedisClusterBroker
from fastapi_channels.wire.errors import ConfigurationError
from tests.failover_checks import (
    Topics,
    both_ways,
    history_and_presence_survive,
    two_subscribed,
    under_traffic,
)
from tests.redis_cluster import ClusterGroup, ClusterNode

TIMEOUT = 5.0
FAILOVER_TIMEOUT = 20.0
"""The most a shard's failover may take in these tests, from its master's end to messages
flowing again (the cluster's node timeout is 1 s; the election and the brokers' backoff add
the rest)."""
FAST: dict[str, Any] = {"reconnect_delay": (0.02, 0.2), "ping_interval": 0.5, "timeout": 1.0}


def test_a_cluster_url_names_seed_nodes_and_the_prefix() -> None:
    broker = create_broker("redis+cluster://127.0.0.1:7000,127.0.0.1:7001?prefix=app")
    assert isinstance(broker, RedisClusterBroker)
    assert broker.prefix == "app"
    assert broker.channel("c:room") == b"app:{c:room}"  # the topic is the hash tag


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",  # no seed
        "redis+cluster://127.0.0.1:7000/1",  # a cluster has database 0 only
        "redis+cluster://127.0.0.1:7000?prefix=a{b}",  # would pin every key to one slot
    ],
)
def test_a_bad_cluster_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        create_broker(url)


@pytest.fixture
async def brokers(
    redis_cluster: ClusterGroup, redis_prefix: str
) -> AsyncIterator[Callable[..., RedisClusterBroker]]:
    """Makes cluster brokers, as processes of one deployment, and stops them at the end."""
    made: list[RedisClusterBroker] = []

    def make(**options: Any) -> RedisClusterBroker:
        broker = RedisClusterBroker(redis_cluster.url, prefix=redis_prefix, **{**FAST, **options})
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.stop()


async def test_topics_spread_over_the_shards_and_each_is_subscribed_on_its_owner(
    redis_cluster: ClusterGroup, brokers: Callable[..., RedisClusterBroker]
) -> None:
    topics_a, topics_b = Topics(), Topics()
    a, b = brokers(), brokers()
    await a.start(topics_a)
    await b.start(topics_b)
    names = [f"t{i}" for i in range(12)]
    for name in names:
        await b.subscribe(name)
    for name in names:
        await a.publish(name, name.encode())
    assert [await topics_b.get(name) for name in names] == [name.encode() for name in names]
    owners = {redis_cluster.owner(b.channel(name).decode()).port for name in names}
    assert len(owners) == 3 == b.shards  # twelve topics: every shard carries some
    for name in names:  # each shard channel has its subscriber on the master of its slot
        owner = redis_cluster.owner(b.channel(name).decode())
        assert await shard_subscribers(owner, b.channel(name)) == 1


async def shard_subscribers(node: ClusterNode, channel: bytes) -> int:
    """How many connections ``node`` has subscribed to the shard channel ``channel``."""
    async with aioredis.Redis(port=node.port) as client:
        reply = await client.execute_command(  # type: ignore[no-untyped-call]
            "PUBSUB", "SHARDNUMSUB", channel
        )
    return int(reply[1])


async def followed(broker: RedisBroker) -> None:
    """Wait until ``broker`` noticed the shard's loss and linked every master again."""
    async with asyncio.timeout(FAILOVER_TIMEOUT):
        await broker.wait_for_state(BrokerState.RECONNECTING)
        await broker.wait_for_state(BrokerState.CONNECTED)


@contextlib.contextmanager
def master_stopped(cluster: ClusterGroup, node: ClusterNode) -> Any:
    """Stop a master (its replica takes over); start it again at the end (it rejoins as the
    new master's replica) and wait until the cluster is whole again."""
    node.stop()
    try:
        yield
    finally:
        node.start()
        cluster.wait_ok()


async def test_broadcasts_flow_again_on_every_process_after_a_shard_master_stops_under_traffic(
    redis_cluster: ClusterGroup, brokers: Callable[..., RedisClusterBroker]
) -> None:
    a, topics_a, b, topics_b = await two_subscribed(brokers, "traffic")

    old = redis_cluster.owner(a.channel("t").decode())
    async with under_traffic(a, b):
        with master_stopped(redis_cluster, old):
            began = time.monotonic()
            await asyncio.gather(followed(a), followed(b))
            await both_ways(a, topics_a, b, topics_b)
            elapsed = time.monotonic() - began
            new = redis_cluster.owner(a.channel("t").decode())
            assert new is not old
            assert await shard_subscribers(new, a.channel("t")) == 2  # on the new master
    print(f"\nShard master stopped, to messages flowing on both processes: {elapsed:.2f} s")
    assert elapsed < FAILOVER_TIMEOUT


async def test_history_and_presence_follow_a_shard_master_that_stops(
    redis_cluster: ClusterGroup, brokers: Callable[..., RedisClusterBroker]
) -> None:
    first = brokers()
    owner = redis_cluster.owner(first.channel("c:log:1").decode())
    elapsed = await history_and_presence_survive(
        first, brokers(), lambda: master_stopped(redis_cluster, owner), followed
    )
    print(f"\nShard master stopped, to a stored broadcast: {elapsed:.2f} s")
    assert elapsed < FAILOVER_TIMEOUT


async def test_delivery_goes_on_after_a_slot_moves_to_another_master(
    redis_cluster: ClusterGroup, brokers: Callable[..., RedisClusterBroker]
) -> None:
    a, topics_a, b, topics_b = await two_subscribed(brokers)
    publisher = brokers()  # interested in nothing: no subscription tells it of the move
    await publisher.start(Topics())
    await publisher.publish("t", b"from the publisher")
    assert [await topics_a.get("t"), await topics_b.get("t")] == [b"from the publisher"] * 2

    key = a.channel("t").decode()
    old = redis_cluster.owner(key)
    target = next(node for node in redis_cluster.masters() if node is not old)
    redis_cluster.move_slot(key, target)  # the old owner ends the slot's shard subscriptions
    await asyncio.gather(followed(a), followed(b))
    assert redis_cluster.owner(key) is target
    await both_ways(a, topics_a, b, topics_b)

    # The publisher learns of it from the old owner's MOVED: that publish fails, and the
    # broker reads the slot map again.
    with pytest.raises(BrokerError, match="did not take"):
        await publisher.publish("t", b"lost")
    await followed(publisher)
    await publisher.publish("t", b"again")
    assert [await topics_a.get("t"), await topics_b.get("t")] == [b"again"] * 2
    assert await shard_subscribers(target, a.channel("t")) == 2
