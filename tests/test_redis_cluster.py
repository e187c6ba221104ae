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
from redis.crc import key_slot

from fastapi_channels import BrokerError
from fastapi_channels.brokers import create_broker
from fastapi_channels.brokers._redis_slots import SlotMap
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.brokers.redis_cluster import RedisClusterBroker
from fastapi_channels.brokers.stores import Position, Retention
from fastapi_channels.testing import lifespan
from fastapi_channels.wire.errors import ConfigurationError
from tests.conftest import Harness, eventually
from tests.failover_checks import (
    Log,
    Topics,
    both_ways,
    history_and_presence_survive,
    two_subscribed,
    under_traffic,
)
from tests.redis_cluster import ClusterGroup, ClusterNode, client

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


def test_a_moved_reply_gives_one_slot_a_new_owner_in_the_map() -> None:
    a, b, c = ("127.0.0.1", 7000), ("127.0.0.1", 7001), ("127.0.0.1", 7002)
    slots = SlotMap((0, 8192), (8191, 16383), (a, b))
    topic = same_slot("t")  # in slot 15891, b's
    moved = slots.with_owner(key_slot(topic.encode()), c)
    assert moved.owner(topic.encode()) == c
    neighbours = [f"s{i}" for i in range(100_000)]
    before = next(n for n in neighbours if key_slot(n.encode()) == key_slot(b"t") - 1)
    after = next(n for n in neighbours if key_slot(n.encode()) == key_slot(b"t") + 1)
    assert moved.owner(before.encode()) == b == moved.owner(after.encode())
    assert moved.owner(b"bar") == a  # slot 5061: the first half stays a's
    assert moved.masters == {a, b, c}


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


@contextlib.contextmanager
def master_restarted(cluster: ClusterGroup, node: ClusterNode) -> Any:
    """Stop a master and start it again at once, on its port and with its directory (its
    ``nodes.conf``: it rejoins as itself, its data gone); at the end, wait until the cluster
    is whole again."""
    node.stop()
    node.start()
    try:
        yield
    finally:
        cluster.wait_ok()


@pytest.mark.parametrize("failure", [master_stopped, master_restarted], ids=["stops", "restarts"])
async def test_history_and_presence_follow_a_shard_master_that_fails_under_traffic(
    redis_cluster: ClusterGroup,
    brokers: Callable[..., RedisClusterBroker],
    failure: Callable[[ClusterGroup, ClusterNode], Any],
) -> None:
    first = brokers()
    owner = redis_cluster.owner(first.channel("c:log:1").decode())
    elapsed = await history_and_presence_survive(
        first, brokers(), lambda: failure(redis_cluster, owner), followed, traffic=True
    )
    role = redis_cluster.role(owner)
    print(f"\nShard master {failure.__name__[7:]}, to a stored broadcast: {elapsed:.2f} s ({role})")
    assert elapsed < FAILOVER_TIMEOUT
    master = redis_cluster.owner(first.channel("c:log:1").decode())
    if role == "master":  # back before its replica was promoted: its slots are its own still
        assert master is owner
    else:  # back after: a replica of the promoted one
        with client(owner.port) as c:
            assert int(c.execute_command("ROLE")[2]) == master.port


async def with_a_publisher(
    brokers: Callable[..., RedisClusterBroker],
) -> tuple[RedisBroker, Topics, RedisBroker, Topics, RedisClusterBroker]:
    """Two brokers subscribed to ``t`` (`two_subscribed`), and a third interested in nothing:
    no subscription of its own tells it that a slot moved, only a ``MOVED``."""
    publisher = brokers()
    await publisher.start(Topics())
    return (*await two_subscribed(brokers), publisher)


async def test_delivery_goes_on_after_a_slot_moves_to_another_master(
    redis_cluster: ClusterGroup, brokers: Callable[..., RedisClusterBroker]
) -> None:
    a, topics_a, b, topics_b, publisher = await with_a_publisher(brokers)
    await publisher.publish("t", b"from the publisher")
    assert [await topics_a.get("t"), await topics_b.get("t")] == [b"from the publisher"] * 2

    key = a.channel("t").decode()
    old = redis_cluster.owner(key)
    target = next(node for node in redis_cluster.masters() if node is not old)
    redis_cluster.move_slot(key, target)  # the old owner ends the slot's shard subscriptions
    await asyncio.gather(followed(a), followed(b))
    assert redis_cluster.owner(key) is target
    await both_ways(a, topics_a, b, topics_b)

    # The publisher learns of it from the old owner's MOVED, and publishes on the new owner.
    await publisher.publish("t", b"again")
    assert [await topics_a.get("t"), await topics_b.get("t")] == [b"again"] * 2
    assert publisher.state is BrokerState.CONNECTED  # no reconnection for that
    assert await shard_subscribers(target, a.channel("t")) == 2


KEEP = Retention(size=1000, ttl=None, keep=60)


def same_slot(topic: str) -> str:
    """Another topic whose channel falls in ``topic``'s slot (the topic is the hash tag)."""
    slot = key_slot(topic.encode())
    return next(f"s{i}" for i in range(1_000_000) if key_slot(f"s{i}".encode()) == slot)


class Traffic:
    """Publishers sending numbered messages without pause, each failure recorded, until
    `stop`; `more` waits until every one of them published ``n`` more."""

    def __init__(self) -> None:
        self.errors: list[BrokerError] = []
        self.positions: list[Position] = []
        self._counts: list[int] = []
        self._progress = asyncio.Condition()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def plain(self, broker: RedisBroker, name: str, topic: str) -> None:
        async def send(i: int) -> None:
            await broker.publish(topic, f"{name}:{i}".encode())

        self._start(send)

    def stored(self, broker: RedisBroker, topic: str) -> None:
        async def send(i: int) -> None:
            self.positions.append(await broker.publish_stored(topic, f"{i}".encode(), KEEP))

        self._start(send)

    def _start(self, send: Callable[[int], Any]) -> None:
        index = len(self._counts)
        self._counts.append(0)

        async def run() -> None:
            while not self._stop.is_set():
                try:
                    await send(self._counts[index])
                except BrokerError as exc:
                    self.errors.append(exc)
                async with self._progress:
                    self._counts[index] += 1
                    self._progress.notify_all()
                await asyncio.sleep(0.002)  # pacing, not synchronisation

        self._tasks.append(asyncio.create_task(run()))

    async def more(self, n: int, *, of: int | None = None) -> None:
        """Wait until each publisher (each of the first ``of``) published ``n`` more."""
        async with asyncio.timeout(FAILOVER_TIMEOUT), self._progress:
            wanted = [count + n for count in self._counts[:of]]
            await self._progress.wait_for(
                lambda: all(c >= w for c, w in zip(self._counts, wanted, strict=False))
            )

    async def stop(self) -> list[int]:
        """Stop publishing; return how many each publisher sent."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self._counts


async def received_until_the_end(topics: Topics, ends: int) -> dict[str, list[int]]:
    """The numbers each publisher's messages on ``t`` carried, in arrival order, up to the
    ``ends`` end markers."""
    numbers: dict[str, list[int]] = {}
    for _ in range(100_000):
        name, _, number = (await topics.get("t")).decode().partition(":")
        if number == "end":
            ends -= 1
            if not ends:
                return numbers
        else:
            numbers.setdefault(name, []).append(int(number))
    raise AssertionError("no end marker")


async def test_publishes_go_on_while_their_slot_migrates(
    redis_cluster: ClusterGroup, brokers: Callable[..., RedisClusterBroker]
) -> None:
    a, topics_a, _, topics_b, publisher = await with_a_publisher(brokers)
    stored = same_slot("t")
    first = await publisher.publish_stored(stored, b"first", KEEP)  # keys to migrate
    key = a.channel("t").decode()
    target = next(node for node in redis_cluster.masters() if node is not redis_cluster.owner(key))
    move = redis_cluster.slot_move(key, target)

    traffic = Traffic()
    traffic.plain(a, "a", "t")  # a subscriber, re-subscribing during the move
    traffic.plain(publisher, "p", "t")
    traffic.stored(publisher, stored)
    await traffic.more(10)
    await asyncio.to_thread(move.begin)
    await traffic.more(10)  # the source serves the slot still
    assert await asyncio.to_thread(move.migrate_keys) >= 2
    await traffic.more(10)  # the stored ones are sent to the target (ASK)
    assert traffic.positions[-1].epoch != first.epoch  # stored there: a new master, new epoch
    await asyncio.to_thread(move.finish)
    await traffic.more(10)  # the publisher's go to the source, and follow its MOVED

    async def subscribed_again() -> bool:
        return await shard_subscribers(target, a.channel("t")) == 2

    await eventually(subscribed_again, within=FAILOVER_TIMEOUT)
    await traffic.more(10)
    sent = await traffic.stop()
    assert traffic.errors == []
    await a.publish("t", b"a:end")
    await publisher.publish("t", b"p:end")

    # Each process got each publisher's messages once and in order; plain pub/sub has no
    # replay, so those published while a process re-subscribed did not reach it.
    for topics in (topics_a, topics_b):
        numbers = await received_until_the_end(topics, 2)
        for name, count in zip("ap", sent, strict=False):
            got = numbers.get(name, [])
            assert got == sorted(set(got)), got  # in order, never twice
            assert got[-1] == count - 1  # the last ones arrived
            print(f"\n{name}: {count} sent, {count - len(got)} not received (re-subscribing)")
    assert topics_a.queues["t"].empty() and topics_b.queues["t"].empty()

    # The history has every stored message once, in order; the slot's new master gave it
    # a new epoch (the documented rule), the offsets going on.
    history = await publisher.read_stored(stored, KEEP)
    offsets = [position.offset for position in traffic.positions]
    assert offsets == list(range(first.offset + 1, first.offset + 1 + sent[2]))
    assert [e.data for e in history.entries] == [b"first", *(b"%d" % i for i in range(sent[2]))]
    assert [e.offset for e in history.entries] == [first.offset, *offsets]
    assert history.epoch == traffic.positions[-1].epoch != first.epoch


async def test_a_history_channel_through_a_slot_move_delivers_once_in_order_epoch_told(
    redis_cluster: ClusterGroup, brokers: Callable[..., RedisClusterBroker]
) -> None:
    subscriber, publisher = brokers(), brokers()
    one, two = (Harness.build(listeners=[Log], broker=b) for b in (subscriber, publisher))
    key = subscriber.channel("c:log:1").decode()
    target = next(node for node in redis_cluster.masters() if node is not redis_cluster.owner(key))
    move = redis_cluster.slot_move(key, target)
    positions: list[Position] = []

    async def broadcast(n: int) -> None:
        for _ in range(n):
            position = await two.server.broadcast(Log, "log:1", "line", len(positions))
            assert position is not None
            positions.append(position)

    async def resubscribed() -> bool:
        return await shard_subscribers(target, subscriber.channel("c:log:1")) == 1

    async with lifespan(one.app), lifespan(two.app), one.client("ann") as ann:
        assert (await ann.subscribe("log:1"))["successful"]
        await broadcast(5)
        await asyncio.to_thread(move.begin)
        await broadcast(5)  # on the source still
        await asyncio.to_thread(move.migrate_keys)
        await broadcast(5)  # on the target (ASK), in a new epoch, before ann's process moved
        await asyncio.to_thread(move.finish)
        await eventually(resubscribed, within=FAILOVER_TIMEOUT)
        await broadcast(5)
        got: dict[int, Any] = {}
        for _ in range(100):  # bounded: at most 20 messages
            packet = await ann.receive(TIMEOUT)
            if packet.get("channel") == "log:1" and packet.event == "line":
                assert packet.data not in got  # never twice
                got[packet.data] = packet["position"]
                if packet.data == 19:
                    break
    assert list(got) == sorted(got)  # in order
    assert [got[i] for i in got] == [
        {"offset": positions[i].offset, "epoch": positions[i].epoch} for i in got
    ]
    assert {p.epoch for p in positions[:10]} == {positions[0].epoch} != {positions[10].epoch}
    assert all(p.epoch == positions[10].epoch for p in positions[10:])  # one new epoch
    # Every message of the old epoch, and of the new one once ann's process re-subscribed;
    # what the new owner stored before that is in the history, not replayed (another epoch).
    missed = sorted(set(range(20)) - set(got))
    assert set(missed) <= set(range(10, 15)), missed
    print(f"\nthrough a slot move: {len(missed)} of 20 stored messages not replayed")
