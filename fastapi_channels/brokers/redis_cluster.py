"""The Redis Cluster broker: the Redis broker over sharded pub/sub, one link per shard master.

A topic's Redis channel is ``<prefix>:{<topic>}``: the topic is the hash tag, so the channel
and every history and presence key of the topic fall in one slot (see
`fastapi_channels.brokers._redis_cluster_store`). Messages travel with ``SPUBLISH`` and
``SSUBSCRIBE`` (Redis 7): a message goes only to the shard serving its slot, so adding shards
adds capacity, for messages as for history and presence.

Each process keeps, per shard master, one subscriber link (`fastapi_channels.brokers._redis_link`,
the one the single-server broker uses, with its confirmations and watchdog) for the topics of
the slots that master serves, and one publisher connection. A batch of publishes is split by
shard and the shards' pipelines are written at once.

Redirections: a publish answered ``MOVED`` (the slot has a new owner; the command did not
run) is sent again to the node named, the slot updated in the map; one answered ``ASK`` (the
slot is migrating) to the node named, after ``ASKING``. Two redirections at most, a topic's
order kept (see `RedisClusterBroker._publish`).

Faults: the broker re-reads the slot map (``CLUSTER SLOTS``) and re-subscribes every topic on
its owner whenever a slot may have moved: a shard link is lost (a master stopped or failed
over), the server ends a subscription nobody asked to end (the slot moved away), or a
``MOVED`` names a node that is not a known master. While it does, the broker is
``reconnecting`` (local delivery goes on; the server catches history and presence channels up
once it is ``connected`` again); it is ``connected`` only while it holds a link to every
master, each of which said the cluster was ok when linked (a master restarted in place
answers before it has rejoined, ``CLUSTERDOWN`` to every command). When only a slot moved
(every link was fine), it goes on publishing meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Mapping
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import AskError, ClusterDownError, MovedError
from redis.exceptions import ConnectionError as RedisConnectionError

from fastapi_channels.brokers._redis_cluster_store import ClusterStore
from fastapi_channels.brokers._redis_link import Link, close_connection
from fastapi_channels.brokers._redis_slots import Address, SlotMap, check_serving, read_slot_map
from fastapi_channels.brokers._redis_store import RedisStore
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.redis import RedisBroker, _Batch, _fail, _refused
from fastapi_channels.wire.errors import BrokerError, ConfigurationError, OutcomeUnknown

__all__ = ["RedisClusterBroker"]

logger = logging.getLogger("fastapi_channels.brokers.redis")

_REDIRECTS: Final = 2
"""How many times a publish follows a redirection (a ``MOVED``, then an ``ASK`` from the new
owner while it migrates the slot again) before it fails with `BrokerError`."""

_Command = tuple[str, bytes, bytes]
_Target = tuple[Address | None, bool]
"""A node to publish on (None: no master serves the slot), and whether to send ``ASKING``."""


class _SlotMoved(RedisConnectionError):
    """A slot moved between masters this process links: every link is fine, the map is not."""


class RedisClusterBroker(RedisBroker):
    """Carries messages between processes through Redis Cluster's sharded pub/sub (Redis 7+).

    Args:
        url: ``redis+cluster://[[user]:password@]host:port[,host:port...][?options]`` (seed
            nodes; ``rediss+cluster://`` for TLS), with any option ``redis-py`` understands in
            its query string, plus ``prefix``. Database 0 only.
        prefix, timeout, connect_timeout, ping_interval, reconnect_delay, max_payload,
            store_connections: as `RedisBroker`'s; ``ping_interval`` applies to each shard
            link, ``store_connections`` to each node.

    A prefix containing ``{`` or ``}`` would pin every key to one slot: it is refused.

    Under load, each shard carries the publishes of the topics it serves, batched as on one
    server. Losing a shard makes the broker ``reconnecting`` until the slot map names a master
    for every slot again and every link is back (a failover: about the cluster's node timeout
    plus a second); publishes to other processes fail meanwhile with `BrokerError`. A slot
    moving between masters (resharding) fails no publish: a redirected one is sent again to the
    slot's owner, and a process re-subscribing the moved slot's topics goes on publishing.

    Raises:
        ConfigurationError: the URL or an option is invalid.
    """

    name = "redis-cluster"
    _publish_command = "SPUBLISH"
    _cluster = True

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        if "{" in self.prefix or "}" in self.prefix:
            raise ConfigurationError("a Redis Cluster prefix cannot contain '{' or '}'")
        self._channel_prefix = f"{self.prefix}:{{".encode()
        self._slots = SlotMap()
        self._links: dict[Address, Link] = {}
        self._publishers: dict[Address, AbstractConnection] = {}
        self._moved = asyncio.Event()
        self._relinking = False

    def channel(self, topic: str) -> bytes:
        """Return the Redis channel that carries ``topic``: its slot is the topic's."""
        return self._channel_prefix + topic.encode("utf-8", "surrogatepass") + b"}"

    def _topic_of(self, channel: bytes) -> str:
        return channel[len(self._channel_prefix) : -1].decode("utf-8", "surrogatepass")

    @property
    def shards(self) -> int:
        """The number of masters in the last slot map read."""
        return len(self._slots.masters)

    async def stop(self) -> None:
        """Stop the broker and close every shard's connections (see `RedisBroker.stop`)."""
        await super().stop()
        publishers, self._publishers = self._publishers, {}
        for conn in publishers.values():
            await close_connection(conn)

    # ------------------------------------------------------------------ publishing

    async def _send(self, batch: _Batch) -> None:
        """Write each shard's share of the batch on its publisher, all shards at once."""
        shares: dict[_Target, list[_Command]] = {}
        for channel, messages in batch.messages.items():
            target = (self._slots.owner(channel), False)
            shares.setdefault(target, []).extend(self._commands({channel: messages}))
        try:
            failure, payloads, round_trips = await self._publish(shares)
        except BaseException:
            _fail(batch, OutcomeUnknown("publishing was cancelled; it may have been sent"))
            raise
        self._settle(batch, failure, payloads, round_trips=round_trips)

    async def _publish(
        self, shares: dict[_Target, list[_Command]]
    ) -> tuple[BrokerError | None, int, int]:
        """Write the shares, following ``MOVED`` and ``ASK`` replies up to `_REDIRECTS` times.

        A redirected command did not run: only those are sent again, to the node the reply
        names (after ``ASKING`` for an ``ASK``), in their order, before this returns, so
        before any later batch: a topic's messages keep their order. Returns the first
        failure, the payloads taken and the round trips made.
        """
        failure: BrokerError | None = None
        payloads = round_trips = 0
        for redirection in range(_REDIRECTS + 1):
            sent = list(shares.items())
            replies = await asyncio.gather(
                *(
                    self._exchange(self._publisher_of(owner), commands, asking=asking)
                    for (owner, asking), commands in sent
                )
            )
            round_trips += len(sent)
            shares = {}
            for ((owner, _), commands), outcome in zip(sent, replies, strict=True):
                if isinstance(outcome, BrokerError):
                    failure = failure or outcome
                    continue
                for command, error in zip(commands, outcome, strict=True):
                    if error is None:
                        payloads += 1
                    elif isinstance(error, AskError) and redirection < _REDIRECTS:
                        shares.setdefault(self._redirected(error, owner), []).append(command)
                    else:
                        if isinstance(error, AskError | ClusterDownError):
                            self._moved.set()  # the slot map is stale: read it again
                        failure = failure or _refused(error)
            if not shares:
                break
        return failure, payloads, round_trips

    def _redirected(self, error: AskError, asked: Address | None) -> _Target:
        """Where a command answered ``MOVED`` or ``ASK`` goes next; a ``MOVED`` updates the map.

        A ``MOVED`` to a node that is not a known master (a shard added) also has the slot map
        read again, so that this process links that master.
        """
        target = (error.host or (asked or self._endpoint.seeds[0])[0], int(error.port))
        if not isinstance(error, MovedError):
            return target, True
        logger.info("slot %d moved to %s:%d; publishing there", error.slot_id, *target)
        if target not in self._slots.masters:
            self._moved.set()
        self._slots = self._slots.with_owner(error.slot_id, target)
        return target, False

    def _publisher_of(self, owner: Address | None) -> AbstractConnection:
        if owner is None:  # no master serves the slot: the seeds' own node answers MOVED
            owner = self._endpoint.seeds[0]
        conn = self._publishers.get(owner)
        if conn is None:
            conn = self._publishers[owner] = self._node_connection(owner)
        return conn

    def _node_connection(self, address: Address, *, subscriber: bool = False) -> AbstractConnection:
        conn = self._new_connection(subscriber=subscriber)
        conn.host, conn.port = address  # type: ignore[attr-defined]
        return conn

    # ------------------------------------------------------------------ subscribing

    def _link_of(self, topic: str) -> Link | None:
        owner = self._slots.owner(self.channel(topic))
        link = self._links.get(owner) if owner is not None else None
        return link if link is not None and link.conn.is_connected else None

    async def _session(self) -> None:
        """Read the slot map, link every master, subscribe each topic on its owner, watch.

        Ends (raising) when a link fails or a slot moved; the reconnection loop then begins
        a new session on a fresh map.
        """
        self._moved.clear()
        known = [*self._slots.masters, *self._endpoint.seeds]
        self._slots = slots = await read_slot_map(self._connected_to, known)
        links: dict[Address, Link] = {}
        try:
            for address in slots.masters:
                conn = await self._connected_to(address, subscriber=True)
                try:
                    await check_serving(conn, self._timeout)
                except BaseException:
                    await close_connection(conn)
                    raise
                links[address] = Link(
                    conn,
                    self._received,
                    sharded=True,
                    on_unrequested=lambda _channel: self._moved.set(),
                    timeout=self._timeout,
                )
            self._links = links  # a topic subscribed from here on goes to its link at once
            by_owner: dict[Address, list[bytes]] = {address: [] for address in links}
            for topic in self._interest:
                channel = self.channel(topic)
                owner = slots.owner(channel)
                if owner is not None:
                    by_owner[owner].append(channel)
            await asyncio.gather(*(links[a].join(channels) for a, channels in by_owner.items()))
            await self._retire_publishers(slots.masters)
            self._sessions += 1
            if self._sessions > 1 and self._redis_store is not None and not self._relinking:
                await self._redis_store.reset()  # its connections may reach a stopped master
            self._connected(len(self._interest))
            await self._watch_links(links)
        finally:
            self._links = {}
            for link in links.values():
                await link.close()

    async def _watch_links(self, links: Mapping[Address, Link]) -> None:
        watchers = [
            asyncio.create_task(link.watch(self._ping_interval, self._moved.wait))
            for link in links.values()
        ]
        try:
            await asyncio.wait(watchers, return_when=FIRST_COMPLETED)
            for watcher in watchers:
                if watcher.done():
                    watcher.result()  # a failed link raises here
            raise _SlotMoved("a slot moved to another master")
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.wait(watchers)
            for watcher in watchers:
                if not watcher.cancelled():
                    watcher.exception()  # retrieved: the first failure is the one reported

    def _publishing(self) -> bool:
        """Publishes are sent while connected, and while re-subscribing after a slot moved."""
        return super()._publishing() or self._relinking

    def _connection_lost(self, exc: BaseException) -> None:
        self._relinking = isinstance(exc, _SlotMoved)
        if not self._relinking:
            super()._connection_lost(exc)
            return
        logger.info("a slot moved in the Redis Cluster; subscribing again on the new map")
        self._set_state(BrokerState.RECONNECTING, exc)

    def _attempt_failed(self, exc: BaseException, attempt: int) -> None:
        if self._relinking:  # the new map could not be linked: it is an outage after all
            self._relinking = False
            self._down_since = time.monotonic()
            logger.warning(
                "cannot link the Redis Cluster's masters after a slot moved (%s); delivering "
                "within this process only, retrying",
                exc,
            )
        super()._attempt_failed(exc, attempt)

    def _connected(self, topics: int) -> None:
        self._relinking = False
        super()._connected(topics)

    async def _connected_to(self, address: Address, *, subscriber: bool = False) -> Any:
        conn = self._node_connection(address, subscriber=subscriber)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await close_connection(conn)
            raise
        return conn

    async def _retire_publishers(self, masters: frozenset[Address]) -> None:
        """Close the publishers of nodes that are no longer masters (demoted, removed)."""
        for address in [a for a in self._publishers if a not in masters]:
            with contextlib.suppress(Exception):
                await close_connection(self._publishers.pop(address))

    # ------------------------------------------------------------------ history, presence

    @property
    def _store(self) -> RedisStore:
        if self._redis_store is None:
            self._redis_store = ClusterStore(
                self._endpoint.seeds,
                dict(self._pool.connection_kwargs, connection_class=self._pool.connection_class),
                self.prefix,
                self._origin.hex(),
                connections=self._store_connections,
            )
        return self._redis_store
