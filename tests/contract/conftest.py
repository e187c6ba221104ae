"""The contract suite's fixtures: one deployment of processes per broker, and their inboxes.

A `Deployment` makes brokers of one kind that behave as processes of one deployment: memory
brokers share a `MemoryHub`, Redis and NATS brokers the shared test server under a prefix of the
test's own, Sentinel brokers (``redis-sentinel``) a master, replica and Sentinel shared by the
session, Redis Cluster brokers (``redis-cluster``) the session's cluster under a prefix of the
test's own, pub/sub-only brokers a `PubSubNetwork`. Each started broker is a `Node` with an `Inbox`
that records what it delivered, plain or stored, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from fastapi_channels.brokers import Broker, HistoryStore, MemoryBroker, MemoryHub, PresenceStore
from fastapi_channels.brokers._memory_state import PresenceTable, Streams
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.stores import Position
from tests.nats_support import delete_stream
from tests.pubsub_broker import PubSubBroker, PubSubNetwork
from tests.redis_cluster import ClusterGroup, flush_cluster_prefix
from tests.redis_ha import SentinelGroup

TIMEOUT = 5.0
"""Seconds any wait of the suite may take before the test fails."""

Delivery = tuple[str, bytes, Position | None]
"""What a broker delivered: topic, data, and the position of a stored message (else None)."""


class Inbox:
    """What a broker delivered, in order, plain and stored messages alike."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()

    def plain(self, topic: str, data: bytes) -> None:
        self.queue.put_nowait((topic, data, None))

    def stored(self, topic: str, data: bytes, position: Position) -> None:
        self.queue.put_nowait((topic, data, position))

    async def get(self) -> Delivery:
        async with asyncio.timeout(TIMEOUT):
            return await self.queue.get()

    async def take(self, count: int) -> list[Delivery]:
        async with asyncio.timeout(TIMEOUT):
            return [await self.queue.get() for _ in range(count)]

    def assert_empty(self) -> None:
        assert self.queue.empty(), f"unexpected delivery {self.queue.get_nowait()!r}"


@dataclass
class Node:
    """A started broker, one process of the deployment, with what it delivered."""

    broker: Broker
    inbox: Inbox

    @property
    def history(self) -> HistoryStore:
        assert isinstance(self.broker, HistoryStore)
        return self.broker

    @property
    def presence(self) -> PresenceStore:
        assert isinstance(self.broker, PresenceStore)
        return self.broker


@dataclass
class Deployment:
    """Makes and starts brokers of one kind, as processes of one deployment."""

    kind: type[Broker]
    make: Callable[[], Broker]
    forget: Callable[[], Awaitable[None]] | None = None
    """Make the shared store lose every record, as a Redis restart without persistence does
    (for the presence part: every presence store has one)."""
    nodes: list[Node] = field(default_factory=list)

    async def start(self, broker: Broker | None = None) -> Node:
        """Start ``broker`` (a new one by default) as the server does, with a fresh inbox."""
        broker = broker if broker is not None else self.make()
        inbox = Inbox()
        if isinstance(broker, HistoryStore):
            broker.deliver_stored_to(inbox.stored)  # before start, as the server does
        await broker.start(inbox.plain)
        node = Node(broker, inbox)
        self.nodes.append(node)
        return node

    async def stop(self) -> None:
        for node in self.nodes:
            if node.broker.state is not BrokerState.STOPPED:
                await node.broker.stop()


def _kinds() -> dict[str, type[Broker]]:
    from fastapi_channels.brokers.nats import NatsBroker
    from fastapi_channels.brokers.redis import RedisBroker
    from fastapi_channels.brokers.redis_cluster import RedisClusterBroker

    return {
        "memory": MemoryBroker,
        "redis": RedisBroker,
        "redis-sentinel": RedisBroker,
        "redis-cluster": RedisClusterBroker,
        "nats": NatsBroker,
        "pubsub-only": PubSubBroker,
    }


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test on every kind of broker that implements its module's ``STORE``.

    A module of the history part sets ``STORE = HistoryStore``: found by type, so a broker
    that is not one is not run there at all (rather than skipped).
    """
    if "deployment" in metafunc.fixturenames:
        store = getattr(metafunc.module, "STORE", Broker)
        kinds = [name for name, kind in _kinds().items() if issubclass(kind, store)]
        metafunc.parametrize("deployment", kinds, indirect=True)


async def _flush(url: str, prefix: str) -> None:
    """Delete every key under ``prefix``: the records a Redis restart without persistence loses."""
    from redis.asyncio import Redis

    async with Redis.from_url(url) as redis:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)


@pytest.fixture
async def deployment(request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    """A deployment of one kind of broker (see `pytest_generate_tests`)."""
    if request.param == "memory":
        hub = MemoryHub()

        async def restart_hub() -> None:
            hub.presence = PresenceTable(time.monotonic, hub.publish)
            hub.streams = Streams(time.monotonic)

        made = Deployment(MemoryBroker, lambda: MemoryBroker(hub), restart_hub)
    elif request.param == "redis":
        from fastapi_channels.brokers.redis import RedisBroker

        url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_prefix")

        async def flush_prefix() -> None:
            await _flush(url, prefix)

        made = Deployment(RedisBroker, lambda: RedisBroker(url, prefix=prefix), flush_prefix)
    elif request.param == "redis-sentinel":
        from fastapi_channels.brokers.redis import RedisBroker

        group: SentinelGroup = request.getfixturevalue("shared_sentinel_group")
        prefix = request.getfixturevalue("redis_prefix")

        async def flush_master() -> None:
            await _flush(f"redis://127.0.0.1:{group.master_port()}", prefix)

        made = Deployment(RedisBroker, lambda: RedisBroker(group.url, prefix=prefix), flush_master)
    elif request.param == "redis-cluster":
        from fastapi_channels.brokers.redis_cluster import RedisClusterBroker

        cluster: ClusterGroup = request.getfixturevalue("redis_cluster")
        prefix = request.getfixturevalue("redis_prefix")

        async def flush_cluster() -> None:
            await flush_cluster_prefix(cluster, prefix)

        made = Deployment(
            RedisClusterBroker,
            lambda: RedisClusterBroker(cluster.url, prefix=prefix),
            flush_cluster,
        )
    elif request.param == "nats":
        from fastapi_channels.brokers.nats import NatsBroker

        nats_url: str = request.getfixturevalue("nats_url")
        subjects: str = request.getfixturevalue("nats_prefix")

        async def delete_bucket() -> None:  # as NATS restarting with memory storage does
            await delete_stream(nats_url, subjects, history=False)

        made = Deployment(
            NatsBroker,
            lambda: NatsBroker(nats_url, prefix=subjects, history_storage="memory"),
            delete_bucket,
        )
    else:
        network = PubSubNetwork()

        async def nothing_kept() -> None:
            return None

        made = Deployment(PubSubBroker, lambda: PubSubBroker(network), nothing_kept)
    try:
        yield made
    finally:
        await made.stop()


async def fence(publisher: Node, *receivers: Node) -> None:
    """Publish a marker from ``publisher`` and require it to be each receiver's next delivery.

    A process's messages reach another in the order it published them, so whatever
    ``publisher`` published before the marker has then arrived: what did not, will not. For a
    process's own messages (which a broker may deliver locally at once), fence from another
    process, so an echo of them would have come before the marker.
    """
    for receiver in receivers:
        await receiver.broker.subscribe("fence")
    await publisher.broker.publish("fence", b"")
    for receiver in receivers:
        assert await receiver.inbox.get() == ("fence", b"", None)
        await receiver.broker.unsubscribe("fence")
