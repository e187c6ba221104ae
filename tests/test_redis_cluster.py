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

from fastapi_channels import BrokerError, ChannelListener, History, channel
from fastapi_channels.brokers import create_broker
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.redis_cluster import RedisClusterBroker
from fastapi_channels.testing import lifespan
from fastapi_channels.wire.errors import ConfigurationError
from tests.conftest import Harness, eventually
from tests.redis_cluster import ClusterGroup, ClusterNode
from tests.test_sentinel import Topics

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
        async with aioredis.Redis(port=owner.port) as node:
            assert await node.execute_command("PUBSUB", "SHARDNUMSUB", b.channel(name)) == [
                b.channel(name),
                1,
            ]


async def followed(broker: RedisClusterBroker) -> None:
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

    async def traffic(broker: RedisClusterBroker) -> None:
        """Publish without pause (but for a short pacing) until told to stop."""
        while not stop.is_set():
            with contextlib.suppress(BrokerError):
                await broker.publish("traffic", b"x" * 100)
            await asyncio.sleep(0.005)  # pacing, not synchronisation

    old = redis_cluster.owner(a.channel("t").decode())
    senders = [asyncio.create_task(traffic(broker)) for broker in (a, b)]
    try:
        with master_stopped(redis_cluster, old):
            began = time.monotonic()
            await asyncio.gather(followed(a), followed(b))
            await a.publish("t", b"from a")
            assert [await topics_a.get("t"), await topics_b.get("t")] == [b"from a"] * 2
            await b.publish("t", b"from b")
            assert [await topics_a.get("t"), await topics_b.get("t")] == [b"from b"] * 2
            elapsed = time.monotonic() - began
            new = redis_cluster.owner(a.channel("t").decode())
            assert new is not old
            async with aioredis.Redis(port=new.port) as node:  # subscribed on the new master
                numsub = await node.execute_command("PUBSUB", "SHARDNUMSUB", a.channel("t"))
                assert numsub == [a.channel("t"), 2]
    finally:
        stop.set()
        await asyncio.gather(*senders)
    print(f"\nShard master stopped, to messages flowing on both processes: {elapsed:.2f} s")
    assert elapsed < FAILOVER_TIMEOUT


@channel("log:*")
class Log(ChannelListener):
    history = History(size=100)


@channel("room:*")
class Room(ChannelListener):
    presence = True


async def test_history_and_presence_follow_a_shard_master_that_stops(
    redis_cluster: ClusterGroup, brokers: Callable[..., RedisClusterBroker]
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

        with master_stopped(redis_cluster, redis_cluster.owner(first.channel("c:log:1").decode())):
            began = time.monotonic()
            await asyncio.gather(followed(first), followed(second))
            after = await two.server.broadcast(Log, "log:1", "line", "after")
            elapsed = time.monotonic() - began
            assert after is not None and after.epoch != before.epoch  # a new master: new epoch
            packet = await ann.receive(TIMEOUT)
            for _ in range(10):  # bounded: room:1's presence traffic around the failover
                if packet.get("channel") == "log:1":
                    break
                if packet.event == "channels:presence":  # the member list again
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
                members = [await app.server.presence("room:1") for app in (one, two)]
                return all(sorted(m["id"] for m in found) == ["ann", "bob"] for found in members)

            await eventually(everyone_present, within=TIMEOUT)
    print(f"\nShard master stopped, to a stored broadcast: {elapsed:.2f} s")
    assert elapsed < FAILOVER_TIMEOUT


async def test_delivery_goes_on_after_a_slot_moves_to_another_master(
    redis_cluster: ClusterGroup, brokers: Callable[..., RedisClusterBroker]
) -> None:
    topics_a, topics_b = Topics(), Topics()
    a, b = brokers(), brokers()
    await a.start(topics_a)
    await b.start(topics_b)
    for broker in (a, b):
        await broker.subscribe("t")
    await a.publish("t", b"before")
    assert [await topics_a.get("t"), await topics_b.get("t")] == [b"before"] * 2

    key = a.channel("t").decode()
    old = redis_cluster.owner(key)
    target = next(node for node in redis_cluster.masters() if node is not old)
    redis_cluster.move_slot(key, target)  # the old owner ends the slot's shard subscriptions
    await asyncio.gather(followed(a), followed(b))
    assert redis_cluster.owner(key) is target
    await a.publish("t", b"from a")
    assert [await topics_a.get("t"), await topics_b.get("t")] == [b"from a"] * 2
    await b.publish("t", b"from b")
    assert [await topics_a.get("t"), await topics_b.get("t")] == [b"from b"] * 2
    async with aioredis.Redis(port=target.port) as node:
        assert await node.execute_command("PUBSUB", "SHARDNUMSUB", a.channel("t")) == [
            a.channel("t"),
            2,
        ]
