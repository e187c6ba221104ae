"""The Redis broker: messages between processes and hosts through Redis pub/sub.

Each process keeps two connections to Redis, however many websocket connections it serves:

* a **subscriber** connection, subscribed once to each topic this process has local interest
  in (the base class counts the interest), as the Redis channel ``<prefix>:<topic>``;
* a **publisher** connection, on which publishes are pipelined.

A message published here is handed to this process's subscribers at once, without a round trip
through Redis, and sent to Redis for the other processes; a process skips its own messages when
Redis echoes them back. So local delivery never depends on Redis.

Under load, publishes are batched: while one round trip to Redis is in flight, new publishes
wait in a buffer; the next round trip packs every buffered message for one topic into a single
Redis message (see `fastapi_channels.brokers._frames`) and pipelines all topics in one
write. A process publishing faster than the round-trip time therefore sends far fewer Redis
messages than it publishes, and the receiving processes decode them without touching the
message bytes.

Faults: when Redis drops or restarts, the broker logs it (logger
``fastapi_channels.brokers.redis``), keeps delivering locally, reconnects with capped
exponential backoff and jitter, and re-subscribes every topic with local interest. Messages
published anywhere while a process is disconnected do not reach it and are not replayed.

Behind Redis Sentinel (a ``redis+sentinel://`` URL, see
`fastapi_channels.brokers._redis_endpoint`) every connection asks the Sentinels for the master
as it connects, the subscriber accepts only a server that says it is a master, and the watchdog
asks the Sentinels every ``ping_interval`` whether the master moved: a failover is a lost
connection like any other, followed within about a second by a reconnection to the new master.

History and presence (see `fastapi_channels.brokers._redis_store`) run Lua scripts on a
pool of further connections, opened only when a channel uses them. A stored message is not
delivered locally first: the script stores and publishes it in one step, and every process,
this one included, receives it from Redis, so all see one order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from fastapi_channels.brokers import _frames
from fastapi_channels.brokers._redis_endpoint import open_endpoint
from fastapi_channels.brokers._redis_link import TRANSPORT_ERRORS, Link, close_connection, where
from fastapi_channels.brokers._redis_store import RedisStore, parse_position
from fastapi_channels.brokers.base import Broker, BrokerState, MessageHandler
from fastapi_channels.brokers.idempotency import IdempotencyStore, Published
from fastapi_channels.brokers.stores import (
    Announcements,
    BoundedHistoryStore,
    Position,
    PresenceSnapshot,
    PresenceStore,
    Retention,
    Stored,
)
from fastapi_channels.wire.errors import BrokerError, ConfigurationError, OutcomeUnknown

__all__ = ["RedisBroker", "RedisStats"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "fastapi_channels"
_TRANSPORT_ERRORS: Final = TRANSPORT_ERRORS
_SCRIPTED: Final = bytes([_frames.SCRIPTED])


@dataclass(slots=True)
class RedisStats:
    """Counters since the broker was created, for monitoring and benchmarks.

    Attributes:
        published: messages sent to Redis by `RedisBroker.publish`.
        payloads_sent: Redis ``PUBLISH`` commands those messages were packed into.
        round_trips: pipelined writes to Redis (each waits for all of its replies).
        received: messages received from other processes.
        payloads_received: Redis messages those arrived in.
        dropped: Redis messages on our channels that could not be decoded, and dropped.
        reconnects: successful reconnections after losing Redis.
    """

    published: int = 0
    payloads_sent: int = 0
    round_trips: int = 0
    received: int = 0
    payloads_received: int = 0
    dropped: int = 0
    reconnects: int = 0


@dataclass(slots=True)
class _Batch:
    """Publishes waiting for the next round trip, grouped by channel in arrival order."""

    done: asyncio.Future[None]
    messages: dict[bytes, list[bytes]] = field(default_factory=dict)
    count: int = 0


class RedisBroker(Broker, BoundedHistoryStore, PresenceStore, IdempotencyStore):
    """Carries messages between processes through Redis pub/sub (``redis.asyncio``).

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL, or a Sentinel URL
            ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``
            (``rediss+sentinel://`` for TLS), with any option ``redis-py`` understands in its
            query string, plus ``prefix`` (and ``sentinel_username``, ``sentinel_password``
            for the Sentinels).
        prefix: the namespace of this application's Redis channels (``<prefix>:<topic>``).
            Pub/sub channels are shared by every database of a Redis server, so applications
            sharing one server need distinct prefixes. Defaults to the URL's ``prefix`` query
            parameter, else ``"fastapi_channels"``.
        timeout: seconds a Redis command (a publish round trip, a subscription) may take before
            the broker gives up on it: a publish then raises `BrokerError`.
        connect_timeout: seconds one connection attempt may take.
        ping_interval: when nothing arrived from Redis for this many seconds, the broker pings
            it; no answer within another interval counts as a lost connection. This detects a
            silently dead network path. Behind Sentinel, the broker also asks the Sentinels
            this often whether the master moved.
        reconnect_delay: the first and the largest delay between reconnection attempts, in
            seconds. The delay doubles on each failed attempt up to the largest, and each wait
            is drawn at random between half the delay and the delay, so processes that lost
            Redis together do not reconnect in lockstep.
        max_payload: the largest Redis message a batch is packed into, in bytes; a single
            message larger than this travels alone.
        store_connections: the most connections opened for history and presence commands
            (only when a channel uses them); more commands at once wait for one, up to
            ``timeout``. Stored publishes are pipelined in batches whatever this number.

    Raises:
        ConfigurationError: the URL or an option is invalid.
    """

    name = "redis"
    _publish_command = "PUBLISH"
    _cluster = False

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        ping_interval: float = 5.0,
        reconnect_delay: tuple[float, float] = (0.1, 5.0),
        max_payload: int = 512 * 1024,
        store_connections: int = 8,
    ) -> None:
        super().__init__()
        url, url_prefix = _pop_prefix(url)
        if prefix is not None and url_prefix is not None and prefix != url_prefix:
            raise ConfigurationError(
                f"two channel prefixes given: {prefix!r} and {url_prefix!r} in the URL"
            )
        self._prefix = prefix or url_prefix or DEFAULT_PREFIX
        self._channel_prefix = f"{self._prefix}:".encode()
        if not (0 < reconnect_delay[0] <= reconnect_delay[1]):
            raise ConfigurationError("reconnect_delay must be (first, largest) with 0 < first")
        try:
            # RESP2 unless the URL says otherwise: its pub/sub messages are plain replies, the
            # same in every redis-py version, without the per-message work RESP3 pushes cost.
            self._endpoint = open_endpoint(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=connect_timeout,
                protocol=2,
                retry=Retry(NoBackoff(), 0),  # this broker retries, with its own backoff
            )
            self._pool = self._endpoint.pool
            self._pool.connection_kwargs["decode_responses"] = False  # payloads are bytes
            self._publisher = self._new_connection()
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"invalid Redis URL or option: {exc}") from exc
        if bool(self._endpoint.seeds) != self._cluster:
            raise ConfigurationError(
                "a redis+cluster:// URL needs RedisClusterBroker"
                if self._endpoint.seeds
                else "RedisClusterBroker needs a redis+cluster://host:port[,...] URL"
            )
        self._timeout = timeout
        self._ping_interval = ping_interval
        self._reconnect_delay = reconnect_delay
        self._max_payload = max_payload
        if store_connections < 1:
            raise ConfigurationError("store_connections must be at least 1")
        self._store_connections = store_connections
        self._address = self._endpoint.address
        self._sessions = 0  # subscriber connections that reached Redis
        self._origin = os.urandom(_frames.ORIGIN_SIZE)
        self.stats = RedisStats()
        """Counters of traffic and reconnections."""
        self._runner: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self._subscriber: Link | None = None
        self._down_since: float | None = None
        self._batch: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._redis_store: RedisStore | None = None
        self._recheck = asyncio.Event()  # set when the master should be asked for at once

    def counters(self) -> dict[str, int]:
        """Return `stats` as a dict, for metrics."""
        return dataclasses.asdict(self.stats)

    @property
    def prefix(self) -> str:
        """The namespace of this broker's Redis channels."""
        return self._prefix

    def channel(self, topic: str) -> bytes:
        """Return the Redis channel that carries ``topic``."""
        return self._channel_prefix + topic.encode("utf-8", "surrogatepass")

    def _topic_of(self, channel: bytes) -> str:
        return channel[len(self._channel_prefix) :].decode("utf-8", "surrogatepass")

    async def start(self, handler: MessageHandler) -> None:
        """Connect to Redis and start delivering to ``handler``.

        Returns after the first connection attempt. If Redis is unreachable then, the broker
        does not fail: it logs a warning, stays ``connecting`` (unhealthy), delivers locally
        and keeps trying in the background, so a process can start while Redis is down.
        """
        if self._runner is not None:
            raise BrokerError("the broker is already started")
        self._handler = handler
        self._set_state(BrokerState.CONNECTING)
        self._attempted.clear()
        self._runner = asyncio.create_task(self._run(), name="fastapi_channels.redis")
        await self._attempted.wait()

    async def stop(self) -> None:
        """Stop the broker and close both connections.

        An in-flight round trip gets up to ``timeout`` to finish; publishes still waiting then
        raise `BrokerError`.
        """
        self._set_state(BrokerState.STOPPED)  # new publishes fail from here on
        runner, self._runner = self._runner, None
        if self._flusher is not None:
            await asyncio.wait({self._flusher}, timeout=self._timeout)
        for task in (runner, self._flusher):
            if task is not None:
                task.cancel()
                await asyncio.wait({task})
        if self._batch is not None:
            _fail(self._batch, BrokerError("the broker stopped before this message was sent"))
            self._batch = None
        await close_connection(self._publisher)
        if self._redis_store is not None:
            store, self._redis_store = self._redis_store, None
            try:
                await store.close()
            except _TRANSPORT_ERRORS:
                logger.debug("error while closing the Redis store's connections", exc_info=True)
        try:
            await self._endpoint.close()
        except _TRANSPORT_ERRORS:
            logger.debug("error while closing the Sentinel connections", exc_info=True)
        await super().stop()

    async def publish(self, topic: str, data: bytes) -> None:
        """Deliver ``data`` to this process's subscribers, then send it to the other processes.

        Local subscribers receive the message before this returns, whatever the state of Redis.
        The call then waits for Redis to acknowledge the message (one round trip, shared with
        every publish that arrived meanwhile), which gives natural backpressure: a publisher
        that outpaces Redis waits, and its messages are batched.

        Messages published by one process to one topic arrive in publish order in every
        process.

        Raises:
            BrokerError: Redis is disconnected (raised at once, without I/O), could not be
                connected to, or refused the command: no other process got the message. Local
                subscribers got it anyway.
            OutcomeUnknown: the message was written to Redis but no acknowledgement came
                within ``timeout`` (Redis stalled, or the connection dropped mid-reply): other
                processes may or may not have got it.
        """
        self._deliver(topic, data)
        if not self._publishing():
            raise BrokerError(
                f"Redis at {self._address} is unreachable ({self._last_error}); "
                "the message reached this process's subscribers only"
            )
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(asyncio.get_running_loop().create_future())
        batch.messages.setdefault(self.channel(topic), []).append(data)
        batch.count += 1
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="fastapi_channels.redis.pub")
        await asyncio.shield(batch.done)

    async def _flush(self) -> None:
        """Send buffered batches, one round trip at a time, until the buffer is empty."""
        try:
            while (batch := self._batch) is not None:
                self._batch = None
                await self._send(batch)
        finally:
            self._flusher = None

    async def _send(self, batch: _Batch) -> None:
        commands = self._commands(batch.messages)
        try:
            failure = await self._write(self._publisher, commands)
        except BaseException:
            _fail(batch, OutcomeUnknown("publishing was cancelled; it may have been sent"))
            raise
        self._settle(batch, failure, len(commands), round_trips=1)

    def _commands(self, messages: Mapping[bytes, list[bytes]]) -> list[tuple[str, bytes, bytes]]:
        """One publish command per Redis message the topics' messages are packed into."""
        return [
            (self._publish_command, channel, payload)
            for channel, messages_of in messages.items()
            for payload in _frames.pack_batches(self._origin, messages_of, self._max_payload)
        ]

    async def _write(
        self, conn: AbstractConnection, commands: list[tuple[str, bytes, bytes]]
    ) -> BrokerError | None:
        """Send ``commands`` in one write on ``conn`` and read every reply; return the failure.

        `BrokerError` when nothing was sent or Redis refused a command, `OutcomeUnknown` when
        the replies did not come back (the connection is then closed).
        """
        replies = await self._exchange(conn, commands)
        if isinstance(replies, BrokerError):
            return replies
        return _refused(next((error for error in replies if error is not None), None))

    async def _exchange(
        self,
        conn: AbstractConnection,
        commands: list[tuple[str, bytes, bytes]],
        *,
        asking: bool = False,
    ) -> list[ResponseError | None] | BrokerError:
        """Send ``commands`` in one write on ``conn``; return each one's error (None: taken).

        With ``asking``, each command is preceded by ``ASKING`` (Redis Cluster: the node is
        importing the command's slot and is to run it once). A failure of the connection is
        returned instead: `BrokerError` when nothing was sent, `OutcomeUnknown` when the replies
        did not come back (the connection is then closed).
        """
        try:
            if not conn.is_connected:  # with Sentinel, connecting is what finds the master
                await conn.connect()  # type: ignore[no-untyped-call]
        except _TRANSPORT_ERRORS as exc:  # nothing was sent
            await close_connection(conn)
            return BrokerError(f"Redis could not be reached: {exc}")
        sent: list[tuple[str, ...] | tuple[str, bytes, bytes]] = []
        for command in commands:
            if asking:
                sent.append(("ASKING",))
            sent.append(command)
        errors: list[ResponseError | None] = []
        try:
            await conn.send_packed_command(conn.pack_commands(sent), check_health=False)
            error: ResponseError | None = None
            for i in range(len(sent)):
                try:
                    await conn.read_response()
                except ResponseError as exc:  # the connection stays usable
                    error = error or exc
                if not asking or i % 2:  # the command's own reply: ASKING's error is its too
                    errors.append(error)
                    error = None
        except _TRANSPORT_ERRORS as exc:  # written, perhaps run: no answer came back
            await close_connection(conn)
            failure = OutcomeUnknown(f"Redis did not acknowledge the message in time: {exc}")
            failure.__cause__ = exc
            return failure
        return errors

    def _settle(
        self, batch: _Batch, failure: BrokerError | None, payloads: int, round_trips: int
    ) -> None:
        """Resolve a sent batch: its publishers return, or raise ``failure``."""
        if failure is not None:
            _fail(batch, failure)
            return
        self.stats.published += batch.count
        self.stats.payloads_sent += payloads
        self.stats.round_trips += round_trips
        batch.done.set_result(None)

    async def _subscribe(self, topic: str) -> None:
        if (link := self._link_of(topic)) is not None:
            await link.change(True, self.channel(topic))

    async def _unsubscribe(self, topic: str) -> None:
        if (link := self._link_of(topic)) is not None:
            await link.change(False, self.channel(topic))

    def _link_of(self, topic: str) -> Link | None:
        """The subscriber link that carries ``topic`` now; None while disconnected.

        While Redis is disconnected a change returns at once: reconnecting subscribes exactly
        the topics with local interest at that time, and local delivery works meanwhile.
        """
        link = self._subscriber
        return link if link is not None and link.conn.is_connected else None

    async def _run(self) -> None:
        """Connect, serve, and reconnect for as long as the broker runs."""
        attempt = 0
        try:
            while True:
                delay = 0.0
                try:
                    await self._session()
                except Exception as exc:  # even a bug must not end cross-process delivery
                    if not isinstance(exc, _TRANSPORT_ERRORS):
                        logger.exception("unexpected error in the Redis broker; reconnecting")
                    if self._state is BrokerState.CONNECTED:
                        self._connection_lost(exc)
                        attempt = 0
                    else:
                        self._attempt_failed(exc, attempt)
                        delay = self._backoff(attempt)
                        attempt += 1
                self._attempted.set()
                if delay:
                    await asyncio.sleep(delay)
        finally:
            self._attempted.set()

    async def _session(self) -> None:
        """Connect the subscriber, subscribe every topic, then watch until the connection fails."""
        conn = self._new_connection(subscriber=True)
        link = Link(conn, self._received, timeout=self._timeout)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            await self._begin_session(conn)
            self._subscriber = link
            await link.join([self.channel(topic) for topic in self._interest])
            self._connected(len(self._interest))
            while True:
                # Returns when a store command failed, and behind Sentinel every interval too
                # (a failover may have left the old master up): is the master still there?
                await link.watch(
                    self._ping_interval,
                    self._recheck.wait,
                    each_interval=self._endpoint.follows_failovers,
                )
                self._recheck.clear()
                await self._check_master(conn)
        finally:
            self._subscriber = None
            await link.close()

    async def _begin_session(self, conn: AbstractConnection) -> None:
        """Make sure a new subscriber connection reached a master, and follow it there.

        With Sentinel, the connection asked the Sentinels for the master as it connected; a
        server that is not a master (yet, or any more) fails the attempt, which is retried with
        the backoff. After a reconnection the publisher and the store's connections are closed,
        so that they too find the master again as they reconnect.
        """
        if not self._endpoint.follows_failovers:
            return
        await conn.send_command("ROLE", check_health=False)
        role = await conn.read_response()
        if not isinstance(role, list) or not role or role[0] != b"master":
            raise RedisConnectionError(f"{where(conn)} is not the master")
        self._sessions += 1
        if self._sessions > 1:
            await close_connection(self._publisher)
            if self._redis_store is not None:
                await self._redis_store.reset()

    async def _check_master(self, conn: AbstractConnection) -> None:
        """Raise when the Sentinels name another master than the one ``conn`` reached.

        This catches a failover that left the old master running (``SENTINEL FAILOVER``, a
        partition): the processes leave it within ``ping_interval``, or at once when a history
        or presence command fails (a write refused with ``READONLY`` by a demoted master).
        Sentinels that do not answer (within ``timeout``) leave the connection as it is.
        """
        if not self._endpoint.follows_failovers:
            return
        try:
            async with asyncio.timeout(self._timeout):
                address = await self._endpoint.master_address()
        except (*_TRANSPORT_ERRORS, TimeoutError) as exc:
            logger.debug("no Sentinel named the master (%s); staying on %s", exc, where(conn))
            return
        if address is not None and f"{address[0]}:{address[1]}" != where(conn):
            raise RedisConnectionError(f"Sentinel moved the master to {address[0]}:{address[1]}")

    def _received(self, channel: bytes, payload: bytes) -> None:
        if payload[:1] == _SCRIPTED:
            self._received_scripted(channel, payload)
            return
        try:
            origin, messages = _frames.unpack(payload)
        except ValueError as exc:
            self.stats.dropped += 1
            logger.warning("dropped an undecodable message on Redis channel %r: %s", channel, exc)
            return
        if origin == self._origin:
            return  # already delivered locally when it was published
        self.stats.payloads_received += 1
        self.stats.received += len(messages)
        topic = self._topic_of(channel)
        for message in messages:
            try:
                self._deliver(topic, message)
            except Exception:
                logger.exception("the message handler failed on topic %r", topic)

    def _received_scripted(self, channel: bytes, payload: bytes) -> None:
        """Deliver a message a Lua script published: a stored message or an announcement."""
        try:
            header, message = _frames.unpack_scripted(payload)
            position = parse_position(header) if header else None
        except ValueError as exc:
            self.stats.dropped += 1
            logger.warning("dropped an undecodable message on Redis channel %r: %s", channel, exc)
            return
        self.stats.payloads_received += 1
        self.stats.received += 1
        topic = self._topic_of(channel)
        try:
            if position is None:
                self._deliver(topic, message)
            else:
                self._deliver_stored(topic, message, position)
        except Exception:
            logger.exception("the message handler failed on topic %r", topic)

    # ------------------------------------------------------------------ history, presence

    @property
    def _store(self) -> RedisStore:
        if self._redis_store is None:
            self._redis_store = RedisStore(
                self._pool,
                self._prefix,
                self._origin.hex(),
                connections=self._store_connections,
                timeout=self._timeout,
                follow_master=self._endpoint.follows_failovers,
                on_failure=self._recheck.set if self._endpoint.follows_failovers else None,
            )
        return self._redis_store

    async def publish_stored(self, topic: str, data: bytes, retention: Retention) -> Position:
        """Store ``data`` in ``topic``'s stream and publish it, in one Lua script.

        Every process receives it from Redis, this one included, in offset order.

        Raises:
            BrokerError: Redis is disconnected (raised at once), could not be reached, or the
                script failed; the message then reached no one.
            OutcomeUnknown: the script was sent but Redis did not answer within ``timeout``;
                the message may have been stored and delivered.
        """
        self._check_connected()
        return await self._store.publish_stored(self.channel(topic), topic, data, retention)

    async def publish_once(
        self,
        topic: str,
        data: bytes,
        key: str,
        window: float,
        retention: Retention | None = None,
    ) -> Published:
        """Publish ``data`` unless ``key`` was published on ``topic`` within ``window``.

        One Lua script checks and records the key (``SET NX PX``) and publishes (and stores,
        with ``retention``), so a retry after `OutcomeUnknown` is safe. Every process receives
        the message from Redis, this one included, like a stored message.

        Raises:
            BrokerError: Redis is disconnected (raised at once) or could not be reached;
                nothing was published or recorded.
            OutcomeUnknown: the script was sent but Redis did not answer within ``timeout``.
        """
        self._check_connected()
        return await self._store.publish_once(
            self.channel(topic), topic, data, key, window, retention
        )

    def _publishing(self) -> bool:
        """Whether publishes are sent to Redis now (else they fail at once)."""
        return self._state is BrokerState.CONNECTED

    def _check_connected(self) -> None:
        if not self._publishing():
            raise BrokerError(
                f"Redis at {self._address} is unreachable ({self._last_error}); "
                "the message was neither stored nor sent"
            )

    async def read_stored(self, topic: str, retention: Retention, after: int = 0) -> Stored:
        """Read ``topic``'s retained messages above ``after`` from its stream."""
        return await self._store.read_stored(topic, retention, after)

    async def presence_update(
        self,
        topic: str,
        join: Mapping[str, bytes],
        leave: Collection[str],
        announce: Announcements,
    ) -> tuple[list[str], list[str]]:
        """Register ``join`` and unregister ``leave`` for this process (one Lua script)."""
        return await self._store.update(self.channel(topic), topic, join, leave, announce)

    async def presence_members(self, topic: str, announce: Announcements) -> dict[str, bytes]:
        """Sweep dead processes, then read ``topic``'s members."""
        return await self._store.members(self.channel(topic), topic, announce)

    async def presence_snapshot(self, topic: str, announce: Announcements) -> PresenceSnapshot:
        """Sweep (if this process is alive), read the members and if they are complete."""
        return await self._store.snapshot(self.channel(topic), topic, announce)

    async def presence_count(self, topic: str, announce: Announcements) -> int:
        """Sweep dead processes, then count ``topic``'s members."""
        return await self._store.count(self.channel(topic), topic, announce)

    async def presence_renew(self, timeout: float, *, was_alive: bool = False) -> bool:
        """Move this process's deadline ``timeout`` seconds ahead (on Redis's clock)."""
        return await self._store.renew(timeout, was_alive)

    async def presence_sync(
        self, topic: str, members: dict[str, bytes], announce: Announcements
    ) -> None:
        """Make this process's members of ``topic`` exactly ``members`` (one Lua script)."""
        await self._store.sync(self.channel(topic), topic, members, announce)

    async def presence_sweep(
        self, topics: dict[str, int], announce: dict[str, Announcements]
    ) -> list[str]:
        """Sweep every topic in ``topics``, pipelined in one round trip."""
        channels = {topic: self.channel(topic) for topic in topics}
        return await self._store.sweep(channels, topics, announce)

    async def presence_retire(self) -> None:
        """Remove this process from the live ones."""
        await self._store.retire()

    def _connected(self, topics: int) -> None:
        if self._state is BrokerState.RECONNECTING:
            self.stats.reconnects += 1
        if self._down_since is not None:  # as loud as the warning that the outage began
            logger.warning(
                "connected to Redis at %s after %.1f s; topics re-subscribed: %d",
                self._address,
                time.monotonic() - self._down_since,
                topics,
            )
            self._down_since = None
        self._set_state(BrokerState.CONNECTED)
        self._attempted.set()

    def _connection_lost(self, exc: BaseException) -> None:
        self._down_since = time.monotonic()
        logger.warning(
            "lost the connection to Redis at %s (%s); delivering within this process only "
            "while reconnecting",
            self._address,
            exc,
        )
        self._set_state(BrokerState.RECONNECTING, exc)

    def _attempt_failed(self, exc: BaseException, attempt: int) -> None:
        reconnecting = self._state is BrokerState.RECONNECTING
        self._set_state(BrokerState.RECONNECTING if reconnecting else BrokerState.CONNECTING, exc)
        if attempt == 0 and not reconnecting:
            self._down_since = time.monotonic()
            logger.warning(
                "cannot reach Redis at %s (%s); delivering within this process only, retrying",
                self._address,
                exc,
            )
        elif attempt % 10 == 9:
            logger.warning(
                "still cannot reach Redis at %s after %d attempts (%s)",
                self._address,
                attempt + 1,
                exc,
            )
        else:
            logger.debug("cannot reach Redis at %s (%s)", self._address, exc)

    def _backoff(self, attempt: int) -> float:
        first, largest = self._reconnect_delay
        delay = min(largest, first * 2 ** min(attempt, 32))
        return random.uniform(delay / 2, delay)

    def _new_connection(self, *, subscriber: bool = False) -> AbstractConnection:
        conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        if subscriber:
            conn.socket_timeout = None  # it waits for messages; liveness comes from pings
        return conn


def _refused(error: ResponseError | None) -> BrokerError | None:
    """The `BrokerError` a publish raises when Redis refused it with ``error`` (None: taken)."""
    if error is None:
        return None
    failure = BrokerError(f"Redis did not take the message: {error}")
    failure.__cause__ = error
    return failure


def _fail(batch: _Batch, error: BrokerError) -> None:
    if not batch.done.done():
        batch.done.set_exception(error)
        batch.done.exception()  # retrieved: every publisher of the batch re-raises it


def _pop_prefix(url: str) -> tuple[str, str | None]:
    """Remove our own ``prefix`` query parameter from ``url`` (redis-py does not know it)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    if not prefixes:
        return url, None
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefixes[-1]
