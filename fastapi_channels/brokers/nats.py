"""The NATS broker: messages between processes and hosts through core NATS subjects.

Each process keeps one connection to NATS (``nats-py``), however many websocket connections it
serves, subscribed once to the subject of each topic it has local interest in (the base class
counts the interest). Topics are encoded into subject tokens under a prefix (see
`fastapi_channels.brokers._nats_subjects`), so any topic name works.

A message published here is handed to this process's subscribers at once, without a round
trip, and sent to NATS for the other processes; the connection asks NATS not to echo its own
messages back (``no_echo``). So local delivery never depends on NATS. NATS keeps each
connection's messages in order, so one process's messages to one topic arrive in publish order.

Under load, a publish waits for NATS to have read it: one round trip, shared by every publish
made meanwhile, gives backpressure without a round trip per message. A subscription waits for
one too, so a message published after it returns is delivered. The round trip is a request to a
subject nobody serves, which the server answers at once with "no responders": it travels in the
connection's order, behind what was written before it (``nats-py``'s own ``flush()`` writes its
``PING`` ahead of the buffered commands, so it cannot confirm them).

Faults: when NATS drops or restarts, ``nats-py`` reconnects by itself and subscribes again; the
broker maps its callbacks to its state (``reconnecting``, then ``connected`` once the
subscriptions are confirmed), logs both (logger ``fastapi_channels.brokers.nats``) and keeps
delivering locally. Publishes made meanwhile raise `BrokerError` at once, after the local
delivery, and are not sent later. Messages published anywhere while a process is disconnected
do not reach it; the server then catches its history channels up from the stream.

History (see `fastapi_channels.brokers._nats_history`) lives in a JetStream stream, created
when a channel first uses it, which republishes each stored message to the topic's subject:
every process, this one included, receives it from NATS, in offset order. Presence (see
`fastapi_channels.brokers._nats_presence`) lives in a JetStream key-value bucket, also created
when first used; its stream republishes each change's announcements to the topic's subject, so
every process receives them in one order, only once the change is stored. Idempotent
publishing (see `fastapi_channels.brokers._nats_once`) keeps its records in a third stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError, SlowConsumerError

from fastapi_channels.brokers._nats_history import NatsHistory, position_of
from fastapi_channels.brokers._nats_once import NatsOnce
from fastapi_channels.brokers._nats_presence import NatsPresence, announcements_of
from fastapi_channels.brokers._nats_subjects import Subjects
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
from fastapi_channels.wire.errors import BrokerError, ConfigurationError

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

__all__ = ["NatsBroker", "NatsStats"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "fastapi_channels"
_TRANSPORT_ERRORS: Final = (NatsError, OSError, asyncio.TimeoutError)


@dataclass(slots=True)
class NatsStats:
    """Counters since the broker was created, for monitoring.

    Attributes:
        published: messages sent to NATS by `NatsBroker.publish`.
        flushes: round trips that confirmed them (each shared by the publishes made meanwhile).
        received: messages received from other processes, plain ones.
        stored: stored messages received (every process's, this one's too).
        dropped: messages NATS dropped because this process read them too slowly, or that
            carried a position that could not be read.
        reconnects: reconnections after losing NATS.
    """

    published: int = 0
    flushes: int = 0
    received: int = 0
    stored: int = 0
    dropped: int = 0
    reconnects: int = 0


class NatsBroker(Broker, BoundedHistoryStore, PresenceStore, IdempotencyStore):
    """Carries messages between processes through NATS; history, presence and keys on JetStream.

    Args:
        url: a ``nats://`` URL (``user:password@`` and several comma-separated servers
            allowed), with ``prefix`` in its query string if wanted.
        prefix: the subject namespace of this application (dot-separated tokens of letters,
            digits, ``-``, ``_`` and ``:``); applications sharing a NATS account need distinct
            prefixes. Defaults to the URL's ``prefix`` query parameter, else
            ``"fastapi_channels"``. The history stream is named after it.
        timeout: seconds a publish's confirmation or a JetStream request may take before the
            call raises `BrokerError`.
        connect_timeout: seconds one connection attempt may take.
        ping_interval: seconds between the client's pings; two unanswered ones count as a
            lost connection, which detects a silently dead network path.
        reconnect_wait: seconds between reconnection attempts to one server.
        history_storage: ``"file"`` (stored messages survive a NATS restart) or ``"memory"``.
        history_limit: the most messages the stream keeps per topic; a channel's larger
            history size is cut to it.
        history_max_age: seconds the stream keeps any message (None: as long as the per-topic
            limit allows). Past it a topic's history is lost and starts a new epoch.
        presence_storage: ``"memory"`` (the default: presence records are lost when NATS
            restarts, and member lists are partial for one presence timeout while every process
            registers its members again) or ``"file"`` (they survive it).
        pending_limit: the most messages received on one topic and not yet delivered; beyond
            it NATS drops messages for this process (counted in `stats` and logged).
        options: further keyword arguments for ``nats.aio.client.Client.connect`` (``tls``,
            ``user_credentials``, ``name``...).

    Raises:
        ConfigurationError: the URL or an option is invalid.
    """

    name = "nats"

    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        ping_interval: float = 5.0,
        reconnect_wait: float = 0.5,
        history_storage: str = "file",
        history_limit: int = 1000,
        history_max_age: float | None = 8 * 24 * 3600.0,
        presence_storage: str = "memory",
        pending_limit: int = 65536,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        servers, url_prefix = _parse(url)
        if prefix is not None and url_prefix is not None and prefix != url_prefix:
            raise ConfigurationError(
                f"two subject prefixes given: {prefix!r} and {url_prefix!r} in the URL"
            )
        try:
            self._subjects = Subjects(prefix or url_prefix or DEFAULT_PREFIX)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
        if history_storage not in ("file", "memory") or presence_storage not in ("file", "memory"):
            raise ConfigurationError("history_storage and presence_storage: 'file' or 'memory'")
        if history_limit < 1:
            raise ConfigurationError("history_limit must be at least 1")
        if timeout <= 0 or connect_timeout <= 0 or ping_interval <= 0 or reconnect_wait < 0:
            raise ConfigurationError("timeouts and intervals must be positive")
        self._servers = servers
        self._address = ",".join(_without_credentials(server) for server in servers)
        self._timeout = timeout
        self._connect_options: dict[str, Any] = {
            "connect_timeout": connect_timeout,
            "ping_interval": ping_interval,
            "max_outstanding_pings": 2,
            "reconnect_time_wait": reconnect_wait,
            **(options or {}),
        }
        self._history_options: dict[str, Any] = {
            "storage": history_storage,
            "max_per_topic": history_limit,
            "max_age": history_max_age,
            "timeout": timeout,
        }
        self._presence_options: dict[str, Any] = {"storage": presence_storage, "timeout": timeout}
        self._pending_limit = pending_limit
        self.stats = NatsStats()
        """Counters of traffic and reconnections."""
        self._client: Client | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self._nc: Client | None = None  # set while the connection is up and subscribed
        self._subs: dict[str, Subscription] = {}
        self._history: NatsHistory | None = None
        self._presence: NatsPresence | None = None
        self._once: NatsOnce | None = None
        self._process = secrets.token_hex(8)  # its name in presence, for its whole life
        self._next_flush: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def prefix(self) -> str:
        """The namespace of this broker's subjects."""
        return self._subjects.prefix

    def subject(self, topic: str) -> str:
        """Return the NATS subject that carries ``topic``."""
        return self._subjects.messages(topic)

    def counters(self) -> dict[str, int]:
        """Return `stats` as a dict, for metrics."""
        return dataclasses.asdict(self.stats)

    # ------------------------------------------------------------------ life

    async def start(self, handler: MessageHandler) -> None:
        """Connect to NATS and start delivering to ``handler``.

        Returns after the first connection attempt. If NATS is unreachable then, the broker
        does not fail: it logs a warning, stays ``connecting`` (unhealthy), delivers locally
        and keeps trying in the background, so a process can start while NATS is down.
        """
        if self._client is not None:
            raise BrokerError("the broker is already started")
        self._handler = handler
        self._set_state(BrokerState.CONNECTING)
        self._attempted.clear()
        self._open()
        await self._attempted.wait()

    def _open(self) -> None:
        """Create a client and connect it in the background; nats-py retries for ever."""
        client = self._client = Client()
        self._connecting = asyncio.create_task(
            self._connect(client), name="fastapi_channels.nats.connect"
        )

    async def _connect(self, client: Client) -> None:
        async def disconnected() -> None:
            self._disconnected(client)

        async def reconnected() -> None:
            self._spawn(self._reconnected(client))

        async def closed() -> None:
            self._closed(client)

        async def error(exc: Exception) -> None:
            self._error(client, exc)

        try:
            await client.connect(
                self._servers,
                error_cb=error,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                closed_cb=closed,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                no_echo=True,  # this process delivers its own messages locally
                **self._connect_options,
            )
            await self._subscribe_all(client)
        except _TRANSPORT_ERRORS as exc:  # the first connection broke at once: start over
            if client is self._client:
                self._spawn(self._restart(client, exc))
            return
        finally:
            self._attempted.set()
        if client is self._client:
            self._connected(client)

    async def _subscribe_all(self, client: Client) -> None:
        """Subscribe every topic with interest on a fresh client, and wait for NATS to confirm."""
        missing = list(self._interest)
        while True:
            for topic in missing:
                if topic not in self._subs:
                    self._subs[topic] = await self._new_subscription(client, topic)
            await self._round_trip(client)
            # Topics wanted meanwhile are not subscribed yet (``_subscribe`` leaves them to this
            # loop): look again after the round trip.
            missing = [topic for topic in self._interest if topic not in self._subs]
            if not missing:
                return

    async def stop(self) -> None:
        """Stop the broker and close the connection.

        Publishes waiting for their confirmation then raise `BrokerError`.
        """
        self._set_state(BrokerState.STOPPED)  # new publishes fail from here on
        client, self._client = self._client, None
        self._nc = None
        connecting, self._connecting = self._connecting, None
        for task in (connecting, self._flusher, *self._tasks):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task})
        if self._next_flush is not None and not self._next_flush.done():
            self._next_flush.set_exception(BrokerError("the broker stopped"))
            self._next_flush.exception()
        self._next_flush = None
        self._subs.clear()
        self._history = None
        self._presence = None
        self._once = None
        if client is not None:
            try:
                await client.close()
            except _TRANSPORT_ERRORS:
                logger.debug("error while closing the NATS connection", exc_info=True)
        await super().stop()

    # ------------------------------------------------------------------ pub/sub

    async def publish(self, topic: str, data: bytes) -> None:
        """Deliver ``data`` to this process's subscribers, then send it to the other processes.

        Local subscribers receive the message before this returns, whatever the state of NATS.
        The call then waits until NATS has read it (one round trip, shared with every publish
        made meanwhile), so a publisher that outpaces NATS waits.

        Raises:
            BrokerError: NATS is disconnected (raised at once, without I/O; the message is not
                sent later), refused the message (larger than the server's ``max_payload``), or
                did not confirm it within ``timeout``. Local subscribers got it anyway; other
                processes may not have.
        """
        self._deliver(topic, data)
        client = self._nc
        if client is None or self._state is not BrokerState.CONNECTED:
            raise BrokerError(
                f"NATS at {self._address} is unreachable ({self._last_error}); "
                "the message reached this process's subscribers only"
            )
        try:
            await client.publish(self._subjects.messages(topic), data)
        except _TRANSPORT_ERRORS as exc:
            raise BrokerError(
                f"NATS did not take the message ({exc or type(exc).__name__}); "
                "it reached this process's subscribers only"
            ) from exc
        self.stats.published += 1
        await self._flushed(client)

    async def _flushed(self, client: Client) -> None:
        """Wait for a flush that began after this call: NATS has read what was written."""
        round_ = self._next_flush
        if round_ is None:
            round_ = self._next_flush = asyncio.get_running_loop().create_future()
        if self._flusher is None:
            self._flusher = asyncio.create_task(
                self._flush(client), name="fastapi_channels.nats.flush"
            )
        await asyncio.shield(round_)

    async def _flush(self, client: Client) -> None:
        """Flush, one round trip at a time, while publishes wait for one."""
        try:
            while (round_ := self._next_flush) is not None:
                self._next_flush = None
                try:
                    await self._round_trip(client)
                except (*_TRANSPORT_ERRORS, asyncio.CancelledError) as exc:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        round_.set_exception(BrokerError("the broker stopped"))
                        round_.exception()
                        raise
                    failure = BrokerError(
                        f"NATS did not confirm the message ({exc or type(exc).__name__}); "
                        "other processes may not have received it"
                    )
                    round_.set_exception(failure)
                    round_.exception()  # retrieved: every publisher of the round re-raises it
                else:
                    self.stats.flushes += 1
                    round_.set_result(None)
        finally:
            self._flusher = None

    async def _round_trip(self, client: Client) -> None:
        """Return once NATS has read everything written on ``client`` before this call.

        Raises:
            nats.errors.Error: the connection is lost or closed, or ``timeout`` passed.
        """
        try:
            await client.request(self._subjects.flush, b"", timeout=self._timeout)
        except NoRespondersError:
            return

    async def _subscribe(self, topic: str) -> None:
        """Subscribe ``topic``'s subject, and wait until NATS has read the subscription.

        While NATS is disconnected this returns at once: reconnecting subscribes exactly the
        topics with local interest at that time, and local delivery works meanwhile.
        """
        client = self._nc
        if client is None or topic in self._subs:
            return
        self._subs[topic] = await self._new_subscription(client, topic)
        if client.is_connected:
            try:
                await self._round_trip(client)
            except _TRANSPORT_ERRORS:  # the connection is lost; reconnecting re-subscribes
                logger.debug("no confirmation of the subscription to %r from NATS", topic)

    async def _unsubscribe(self, topic: str) -> None:
        subscription = self._subs.pop(topic, None)
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except _TRANSPORT_ERRORS:
                logger.debug("error while unsubscribing %r", topic, exc_info=True)

    async def _new_subscription(self, client: Client, topic: str) -> Subscription:
        async def received(msg: Msg) -> None:
            self._received(topic, msg)

        return await client.subscribe(
            self._subjects.messages(topic),
            cb=received,
            pending_msgs_limit=self._pending_limit,
            pending_bytes_limit=0,  # no byte limit: the message count bounds it
        )

    def _received(self, topic: str, msg: Msg) -> None:
        headers = msg.headers or {}
        if headers.get("Nats-Stream") == self._subjects.presence_stream:
            self._announced(topic, headers)
            return
        try:
            position = position_of(headers)
        except ValueError as exc:
            self.stats.dropped += 1
            logger.warning("dropped a message with an unreadable position on %r: %s", topic, exc)
            return
        try:
            if position is None:
                self.stats.received += 1
                self._deliver(topic, msg.data)
            elif position.offset > 0:  # offset 0 marks a new epoch, and carries nothing
                self.stats.stored += 1
                self._deliver_stored(topic, msg.data, position)
        except Exception:
            logger.exception("the message handler failed on topic %r", topic)

    def _announced(self, topic: str, headers: dict[str, str]) -> None:
        """Deliver the announcements a presence change carries, as plain messages."""
        try:
            packets = announcements_of(headers)
        except ValueError as exc:
            self.stats.dropped += 1
            logger.warning("dropped a presence change on %r: %s", topic, exc)
            return
        for packet in packets:
            self.stats.received += 1
            try:
                self._deliver(topic, packet)
            except Exception:
                logger.exception("the message handler failed on topic %r", topic)

    # ------------------------------------------------------------------ history

    @property
    def _store(self) -> NatsHistory:
        client = self._nc
        if client is None:
            raise BrokerError(f"NATS at {self._address} is unreachable ({self._last_error})")
        if self._history is None:
            js = client.jetstream(timeout=self._timeout)
            self._history = NatsHistory(js, self._subjects, **self._history_options)
        return self._history

    async def publish_stored(self, topic: str, data: bytes, retention: Retention) -> Position:
        """Append ``data`` to ``topic``'s history in the stream, which republishes it.

        Every process receives it from NATS, this one included, in offset order.

        Raises:
            BrokerError: NATS is disconnected (raised at once), or the stream did not store
                the message within ``timeout``; the message then reached no one.
        """
        if self._state is not BrokerState.CONNECTED:
            raise BrokerError(
                f"NATS at {self._address} is unreachable ({self._last_error}); "
                "the message was neither stored nor sent"
            )
        return await self._store.publish_stored(topic, data, retention)

    async def read_stored(self, topic: str, retention: Retention, after: int = 0) -> Stored:
        """Read ``topic``'s retained messages above ``after`` from the stream.

        Raises:
            BrokerError: NATS is disconnected, or the stream did not answer within ``timeout``.
        """
        return await self._store.read_stored(topic, retention, after)

    async def publish_once(
        self,
        topic: str,
        data: bytes,
        key: str,
        window: float,
        retention: Retention | None = None,
    ) -> Published:
        """Publish ``data`` unless ``key`` was published on ``topic`` within ``window``.

        A plain message is written to the idempotency stream on the condition that the key's
        last record is the one read (so one process's write is taken), and the stream
        republishes it; a stored one is appended with a message id the history stream
        deduplicates, then recorded (see `fastapi_channels.brokers._nats_once`). Every process
        receives it from NATS, this one included.

        Raises:
            BrokerError: NATS is disconnected (raised at once) or refused; nothing was
                published or recorded.
            OutcomeUnknown: NATS did not answer within ``timeout``; the message may have been
                published. Retry with the same key.
        """
        client = self._nc
        if client is None or self._state is not BrokerState.CONNECTED:
            raise BrokerError(
                f"NATS at {self._address} is unreachable ({self._last_error}); "
                "the message was neither stored nor sent"
            )
        if self._once is None:
            self._once = NatsOnce(
                client.jetstream(timeout=self._timeout),
                self._subjects,
                self._store,
                storage=self._history_options["storage"],
                timeout=self._timeout,
            )
        return await self._once.publish_once(topic, data, key, window, retention)

    # ------------------------------------------------------------------ presence

    @property
    def _members(self) -> NatsPresence:
        client = self._nc
        if client is None or self._state is not BrokerState.CONNECTED:
            raise BrokerError(f"NATS at {self._address} is unreachable ({self._last_error})")
        if self._presence is None:
            js = client.jetstream(timeout=self._timeout)
            self._presence = NatsPresence(
                js, self._subjects, process=self._process, **self._presence_options
            )
        return self._presence

    async def presence_update(
        self,
        topic: str,
        join: Mapping[str, bytes],
        leave: Collection[str],
        announce: Announcements,
    ) -> tuple[list[str], list[str]]:
        """Release ``leave`` and hold ``join`` for this process, in one conditional write.

        Raises:
            BrokerError: NATS is disconnected (raised at once) or the bucket did not take the
                change within ``timeout`` (it may have been taken).
        """
        return await self._members.update(topic, join, leave, announce)

    async def presence_members(self, topic: str, announce: Announcements) -> dict[str, bytes]:
        """Sweep dead processes' members out of ``topic``, then read its members."""
        return await self._members.members(topic, announce)

    async def presence_snapshot(self, topic: str, announce: Announcements) -> PresenceSnapshot:
        """Sweep (if this process is alive), read the members and whether they are complete."""
        return await self._members.snapshot(topic, announce)

    async def presence_count(self, topic: str, announce: Announcements) -> int:
        """Sweep dead processes' members out of ``topic``, then count its members."""
        return await self._members.count(topic, announce)

    async def presence_renew(self, timeout: float, *, was_alive: bool = False) -> bool:
        """Write this process's lease for ``timeout`` seconds (on the stream's clock)."""
        return await self._members.renew(timeout, was_alive)

    async def presence_sync(
        self, topic: str, members: dict[str, bytes], announce: Announcements
    ) -> None:
        """Make this process's members of ``topic`` exactly ``members`` (one conditional write)."""
        await self._members.sync(topic, members, announce)

    async def presence_sweep(
        self, topics: dict[str, int], announce: dict[str, Announcements]
    ) -> list[str]:
        """Sweep every topic in ``topics``, all at once."""
        return await self._members.sweep(topics, announce)

    async def presence_retire(self) -> None:
        """End this process's lease at once, so the others sweep its members."""
        await self._members.retire()

    # ------------------------------------------------------------------ connection events

    def _connected(self, client: Client) -> None:
        if self._state is BrokerState.RECONNECTING:
            self.stats.reconnects += 1
        if self._down_since is not None:  # as loud as the warning that the outage began
            logger.warning(
                "connected to NATS at %s after %.1f s; topics re-subscribed: %d",
                self._address,
                time.monotonic() - self._down_since,
                len(self._subs),
            )
            self._down_since = None
        self._nc = client
        self._set_state(BrokerState.CONNECTED)

    def _disconnected(self, client: Client) -> None:
        if client is not self._client or self._state is BrokerState.STOPPED:
            return
        self._nc = None
        if self._history is not None:
            self._history.forget()  # the stream may be gone, or changed meanwhile
        if self._presence is not None:
            self._presence.forget()
        self._once = None
        if self._state is BrokerState.CONNECTED:
            self._down_since = time.monotonic()
            logger.warning(
                "lost the connection to NATS at %s (%s); delivering within this process only "
                "while reconnecting",
                self._address,
                self._last_error,
            )
            self._set_state(BrokerState.RECONNECTING)

    async def _reconnected(self, client: Client) -> None:
        """nats-py is back and has subscribed again: confirm, then say ``connected``."""
        try:
            await self._subscribe_all(client)
        except _TRANSPORT_ERRORS as exc:
            logger.debug("lost NATS again while re-subscribing: %s", exc)
            return  # its disconnected callback comes next
        if client is self._client and client.is_connected:
            self._connected(client)

    def _closed(self, client: Client) -> None:
        """nats-py gave up on this client: start over with a new one, unless stopping."""
        if client is not self._client or self._state is BrokerState.STOPPED:
            return
        self._spawn(self._restart(client, client.last_error))

    async def _restart(self, client: Client, exc: BaseException | None) -> None:
        if client is not self._client:
            return
        self._client = None  # its closed callback, when closing it below, is not ours any more
        self._nc = None
        self._subs.clear()
        self._history = None
        self._presence = None
        self._once = None
        if self._state is BrokerState.CONNECTED:
            self._down_since = time.monotonic()
        logger.warning(
            "the connection to NATS at %s closed (%s); connecting again", self._address, exc
        )
        if self._state is not BrokerState.CONNECTING:
            self._set_state(BrokerState.RECONNECTING, exc)
        try:
            await client.close()
        except _TRANSPORT_ERRORS:
            logger.debug("error while closing the NATS connection", exc_info=True)
        if self._client is None and self._state is not BrokerState.STOPPED:
            self._open()

    def _error(self, client: Client, exc: Exception) -> None:
        if client is not self._client:
            return
        if isinstance(exc, SlowConsumerError):
            self.stats.dropped += 1
            logger.warning("NATS dropped a message on %s: this process reads too slowly", exc)
            return
        self._set_state(self._state, exc)  # records it as the last error
        if self._state is BrokerState.CONNECTING and not self._attempted.is_set():
            self._down_since = time.monotonic()
            logger.warning(
                "cannot reach NATS at %s (%s); delivering within this process only, retrying",
                self._address,
                exc,
            )
            self._attempted.set()
        else:
            logger.debug("NATS at %s: %s", self._address, exc)

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _parse(url: str) -> tuple[list[str], str | None]:
    """Split ``url`` into its servers and our own ``prefix`` query parameter.

    Raises:
        ConfigurationError: a server is not a ``nats://`` or ``tls://`` URL.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    if rest:
        raise ConfigurationError(f"unknown NATS URL parameters: {rest}; pass options instead")
    if parts.scheme not in ("nats", "tls") or not parts.netloc:
        raise ConfigurationError(f"a NATS URL is nats://host:port, not {url!r}")
    servers = [f"{parts.scheme}://{netloc}" for netloc in parts.netloc.split(",") if netloc]
    return servers, (prefixes[-1] if prefixes else None)


def _without_credentials(server: str) -> str:
    """The server's address for log messages: scheme, host and port, never credentials."""
    parts = urlsplit(server)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 4222}"
