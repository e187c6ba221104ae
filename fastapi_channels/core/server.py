"""The socket server: who is connected, who is subscribed to what, and every way to send.

Each message is encoded once and published through the broker as bytes; every process hands
what its broker delivers to its local subscribers through `fastapi_channels.core.fanout`,
without awaiting any socket. Presence and history channels (see `fastapi_channels.core.presence`
and `fastapi_channels.wire.history`) add state in the broker: a broadcast on a history channel
is stored and delivered with its position, and a new subscriber of either kind is caught up
(see `fastapi_channels.core.catchup`) before it gets live frames. Other channels take none of
these paths.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, overload

from pydantic_core import from_json

from fastapi_channels.brokers.base import Broker
from fastapi_channels.brokers.idempotency import IdempotencyStore
from fastapi_channels.brokers.stores import HistoryStore
from fastapi_channels.core import topics
from fastapi_channels.core.catchup import CaughtUp, Reconnects, catch_up_subscriber, history_page
from fastapi_channels.core.channel import ChannelSpec, LiveChannel, Subscription
from fastapi_channels.core.cluster import ClusterCounts
from fastapi_channels.core.fanout import FAN_OUT_CHUNK, FanOut
from fastapi_channels.core.idempotency import next_key
from fastapi_channels.core.presence import PRESENCE_TOPIC, Presence
from fastapi_channels.core.stats import Stats
from fastapi_channels.wire.errors import BrokerError, CloseCode, InvalidChannel, ProtocolError
from fastapi_channels.wire.features import RECONNECT_ADVICE, SERVER_SUBSCRIPTIONS
from fastapi_channels.wire.history import (
    History,
    HistoryPage,
)
from fastapi_channels.wire.patterns import ChannelPattern, PatternTable
from fastapi_channels.wire.protocol import SUBSCRIBED, UNSUBSCRIBED, encode, validate_channel_name
from fastapi_channels.wire.stored import Position

if TYPE_CHECKING:
    from fastapi_channels.core.connection import SocketConnection

__all__ = ["FAN_OUT_CHUNK", "ChannelDeclaration", "ListenerRef", "SocketServer"]

logger = logging.getLogger("fastapi_channels.server")


class ChannelDeclaration(Protocol):
    """What names a channel listener for a send: its pattern and its history, if any.

    A channel listener class (or instance) is one; so is anything with these two attributes.
    """

    @property
    def pattern(self) -> ChannelPattern:
        """The pattern the listener serves."""

    @property
    def history(self) -> History | None:
        """The listener's history, if any."""


ListenerRef: TypeAlias = "ChannelDeclaration | str"
"""A channel listener class, instance, or pattern string; sends check the channel against it."""


class SocketServer:
    """Registry of this process's connections and subscriptions, and the sending API.

    Injectable: listener constructors and HTTP routes (``Inject(SocketServer)``, or
    ``channels.server``) reach the running instance. Every send method returns once the
    message is handed to the broker; none waits for delivery, and a slow or dead recipient
    never delays the others. ``broadcast`` alone waits, before publishing, while this
    process's fan-out is behind: by more than ``max_backlog_age`` seconds (None: no bound in
    time), measured with ``clock`` (see `fastapi_channels.core.fanout`).
    """

    def __init__(
        self,
        broker: Broker,
        *,
        max_name_length: int = 200,
        presence_timeout: float = 30.0,
        idempotency_window: float = 300.0,
        max_backlog_age: float | None = 0.02,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.broker = broker
        self.idempotency_window = idempotency_window
        """Seconds a broadcast's idempotency key is remembered (per channel)."""
        self._max_name_length = max_name_length
        self._specs: PatternTable[ChannelSpec] = PatternTable()
        self.presence_tracker = Presence(broker, presence_timeout)
        """This process's presence bookkeeping (see `fastapi_channels.core.presence`)."""
        self._connections: dict[str, SocketConnection] = {}
        self._channels: dict[str, LiveChannel] = {}
        # A user's connections as a tuple: most users have one or two, and a 1-tuple is a
        # quarter of an empty set's size (this dict holds an entry per connected user).
        self._users: dict[str, tuple[SocketConnection, ...]] = {}
        self.reconnects = Reconnects(broker, self._channels, topics.CHANNEL, self.presence_tracker)
        """Catches history channels up after a broker outage (see `.catchup`)."""
        self.fan_out = FanOut(
            self._channels,
            self._users,
            self.reconnects,
            self._connections,
            self._server_subscription,
            max_backlog_age,
            clock,
        )
        """Hands what the broker delivers to this process's subscribers (see `.fanout`)."""
        self.cluster = ClusterCounts(broker, self.counts)
        """Cluster-wide counts over the broker (started by the HTTP API, see `.cluster`)."""
        self.fan_out.control = self.cluster.on_message
        self._removals: set[asyncio.Future[None]] = set()
        # Server-side subscription changes, applied one after the other in arrival order.
        self._last_change: asyncio.Future[None] | None = None
        # One bound method for every connection's abandon callback, not one each.
        self._on_abandon: Callable[[SocketConnection], None] = self._remove_soon
        self._empty = asyncio.Event()
        self._empty.set()
        self.stats = Stats()
        """Counters since this server was created (see ``fastapi_channels.core.stats``)."""

    # ------------------------------------------------------------------ lifecycle

    def bind(self, specs: PatternTable[ChannelSpec]) -> None:
        """Give the server the started channel specs (for sends and reads by channel name)."""
        self._specs = specs

    async def start(self) -> None:
        """Start the broker and begin fanning out what it delivers.

        Presence renewals start too when a channel declares presence.
        """
        if isinstance(self.broker, HistoryStore):
            self.broker.deliver_stored_to(self.fan_out.on_stored)
        await self.broker.start(self.fan_out.on_message)
        if any(spec.presence for spec in self._specs):
            self.presence_tracker.start()
        if any(spec.catch_up is not None for spec in self._specs):
            self.reconnects.start()

    async def stop(
        self, reason: str = "server shutting down", timeout: float = 5.0, spread: float = 0.0
    ) -> None:
        """End every local connection for a restart (see `end_for_restart`), then the broker.

        Returns once every connection is gone: those told to reconnect at once (their peer
        does not take its close within ``timeout`` seconds: dropped), those dropped at random
        within ``spread`` seconds at most ``spread + timeout`` seconds later.
        """
        connections = list(self._connections.values())
        await self.cluster.stop()
        dropped = [c for c in connections if self.end_for_restart(c, spread, reason) == "drop"]
        await asyncio.gather(*(c.wait_closed(timeout) for c in connections))
        if dropped:
            try:
                async with asyncio.timeout(spread + timeout):
                    await self._empty.wait()
            except TimeoutError:
                logger.warning("connections still open %ss after the shutdown began", spread)
        if self.presence_tracker.running:  # leave while the broker can still announce it
            await asyncio.gather(*(self.remove_connection(c) for c in connections))
            await self.presence_tracker.stop()
        await self.reconnects.stop()
        await self.broker.stop()
        self.fan_out.clear()

    def end_for_restart(
        self, connection: SocketConnection, spread: float, reason: str = "server shutting down"
    ) -> str | None:
        """End one connection because the server restarts, so that its client comes back.

        A client that announced `RECONNECT_ADVICE` (ours), or one whose socket cannot be
        reset, gets a ``disconnect`` with ``reason`` and a random ``reconnect_after`` between 0
        and ``spread`` seconds (none when ``spread`` is 0), then a close 1012, at once. Any
        other client (Envuso's, which gives up after any close frame) is dropped without a
        close frame at a random moment within ``spread`` seconds, so it reconnects on its own
        and its reconnections spread the same way. The connection is served until then.

        Returns:
            ``"close"`` or ``"drop"``, what was done; None for a connection already closing.
        """
        if not connection.is_open:
            return None
        delay = random.uniform(0, spread) if spread > 0 else 0.0
        if RECONNECT_ADVICE not in connection.features and connection.drop_later(delay):
            return "drop"
        hint = delay if spread > 0 else None
        connection.close_soon(CloseCode.SERVICE_RESTART, reason, reconnect_after=hint)
        return "close"

    # ------------------------------------------------------------------ state

    @property
    def connections(self) -> list[SocketConnection]:
        """This process's open connections."""
        return list(self._connections.values())

    def __len__(self) -> int:
        """How many connections this process holds."""
        return len(self._connections)

    def count_of(self, user_id: object) -> int:
        """How many connections of one user this process holds."""
        return len(self._users.get(str(user_id), ()))

    async def wait_empty(self) -> None:
        """Return once this process holds no connection (at once if it holds none)."""
        await self._empty.wait()

    def channel_counts(self) -> dict[str, int]:
        """Local subscriber count of every channel with at least one subscriber here."""
        return {name: len(live.subscribers) for name, live in self._channels.items()}

    def counts(self, top: int = 100) -> dict[str, Any]:
        """This process's counts for the cluster-wide view: no I/O.

        Args:
            top: how many channels to list (``subscribers``), the most subscribed first.
        """
        counts = self.channel_counts()
        busiest = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return {
            "pid": os.getpid(),
            "connections": len(self._connections),
            "users": len(self._users),
            "channels": len(counts),
            "subscriptions": sum(counts.values()),
            "subscribers": dict(busiest),
        }

    def snapshot(self, top: int = 100) -> dict[str, Any]:
        """This process's state as JSON-ready values, for health and info routes.

        Args:
            top: how many channels to list, the most subscribed first.
        """
        counts = self.channel_counts()
        busiest = sorted(counts.items(), key=lambda item: -item[1])[:top]
        queued = [c.queued for c in self._connections.values()]
        return {
            "pid": os.getpid(),
            "connections": len(self._connections),
            "users": len(self._users),
            "channels": len(counts),
            "subscriptions": sum(counts.values()),
            "queued": sum(queued),
            "max_queued": max(queued, default=0),
            "busiest_channels": dict(busiest),
            "broker": {"type": type(self.broker).__name__, **self.broker.health().as_dict()},
            "stats": self.stats.as_dict(),
        }

    def connections_of(self, user_id: object) -> list[SocketConnection]:
        """This process's connections of one user."""
        return list(self._users.get(str(user_id), ()))

    def subscribers(self, channel: str) -> list[SocketConnection]:
        """This process's connections subscribed to the concrete ``channel``."""
        live = self._channels.get(channel)
        return list(live.subscribers) if live is not None else []

    def health(self, *, errors: bool = True) -> dict[str, Any]:
        """Report this process's state for a health check, as JSON-ready values; no I/O.

        ``healthy`` is false while the broker cannot reach the other processes (Redis down or
        reconnecting): this process then still serves its own connections, but its messages do
        not reach other processes, nor theirs it. ``broker`` holds the broker's own report
        (`BrokerHealth`): its state, how many topics this process listens to, and the last
        transport error.

        Args:
            errors: include the broker's ``last_error``, which may name hosts and ports; pass
                False for a route anyone can read.
        """
        broker = self.broker.health().as_dict()
        if not errors:
            del broker["last_error"]
        return {
            "healthy": broker["healthy"],
            "connections": len(self._connections),
            "channels": len(self._channels),
            "users": len(self._users),
            "broker": broker,
        }

    # ------------------------------------------------------------------ connections

    async def add_connection(self, connection: SocketConnection) -> None:
        """Make ``connection`` reachable by id and by user, on every process.

        Returns once messages sent to its user from any process will reach it.

        Raises:
            BrokerError: the user's topic could not be subscribed; nothing is recorded.
        """
        key = connection.user_key
        if key is not None:
            await self.broker.subscribe(topics.USER + key)
            self._users[key] = (*self._users.get(key, ()), connection)
        self._connections[connection.id] = connection
        connection._on_abandon = self._on_abandon
        self._empty.clear()
        self.stats.connections_opened += 1

    def _remove_soon(self, connection: SocketConnection) -> None:
        """Stop delivering to a connection whose peer stopped reading (it was abandoned).

        Its subscriptions go at once, without waiting for its reader; the connection itself
        stays counted (``max_connections``, the per-user cap) until its reader ends, which is
        when its socket is gone (see `SocketConnection` and its ``abort``).
        """
        task = asyncio.ensure_future(self._unsubscribe_all(connection))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _unsubscribe_all(self, connection: SocketConnection) -> None:
        for channel in list(connection.subscriptions):
            await self.remove_subscription(connection, channel)

    async def remove_connection(self, connection: SocketConnection) -> None:
        """Forget ``connection`` and all its subscriptions."""
        connection.mark_closed()
        await self._unsubscribe_all(connection)
        if self._connections.pop(connection.id, None) is None:
            return
        if not self._connections:
            self._empty.set()
        key = connection.user_key
        if key is None:
            return
        peers = self._users.get(key, ())
        rest = tuple(c for c in peers if c is not connection)
        if len(rest) == len(peers):
            return
        if rest:
            self._users[key] = rest
        else:
            del self._users[key]
        await self.broker.unsubscribe(topics.USER + key)

    # ------------------------------------------------------------------ subscriptions

    async def add_subscription(self, connection: SocketConnection, sub: Subscription) -> None:
        """Subscribe ``connection``; returns once broadcasts to the channel will reach it.

        Each subscription holds its own interest in the channel's broker topics (the broker
        counts it), so a second subscriber waits for a subscription still being made, and a
        failed one leaves nothing behind. On a presence or history channel, live frames are
        then held for the connection until `catch_up` has run (or `release` is called).

        Raises:
            BrokerError: the channel's topics could not be subscribed.
        """
        spec, name = sub.spec, sub.channel
        catch_up = spec.catch_up
        if catch_up is not None:
            catch_up.hold(name, connection)
        try:
            await self._subscribe_topics(spec, name)
        except BaseException:
            if catch_up is not None:
                catch_up.release(name, connection)
            raise
        live = self._channels.get(name)
        if live is None:
            live = self._channels[name] = LiveChannel(sub)
            if spec.presence:
                self.presence_tracker.watch(name)
        live.subscribers.add(connection)
        connection.subscriptions[name] = sub

    async def _subscribe_topics(self, spec: ChannelSpec, channel: str) -> None:
        await self.broker.subscribe(topics.CHANNEL + channel)
        if spec.presence:
            try:
                await self.broker.subscribe(PRESENCE_TOPIC + channel)
            except BaseException:
                await self.broker.unsubscribe(topics.CHANNEL + channel)
                raise

    async def remove_subscription(self, connection: SocketConnection, channel: str) -> bool:
        """Unsubscribe ``connection`` from ``channel``; returns whether it was subscribed."""
        sub = connection.subscriptions.pop(channel, None)
        if sub is None:
            return False
        spec = sub.spec
        if spec.catch_up is not None:
            spec.catch_up.release(channel, connection)
        live = self._channels.get(channel)
        if live is not None:
            live.subscribers.discard(connection)
            if not live.subscribers:
                del self._channels[channel]
                self.reconnects.forget(channel)
                if spec.presence:
                    self.presence_tracker.unwatch(channel)
        await self.broker.unsubscribe(topics.CHANNEL + channel)
        if spec.presence:
            await self.broker.unsubscribe(PRESENCE_TOPIC + channel)
            await self.presence_tracker.remove(connection, channel)
        return True

    async def catch_up(
        self, connection: SocketConnection, sub: Subscription, since: Position | None = None
    ) -> CaughtUp | None:
        """Prepare what a new subscriber of a presence or history channel gets first.

        See `fastapi_channels.core.catchup.catch_up_subscriber`: the caller sends the subscribe
        response with `CaughtUp.fields`, then calls `CaughtUp.finish`. Broker failures are
        logged, not raised.
        """
        return await catch_up_subscriber(
            connection, sub, since, self.presence_tracker, self.broker, self.reconnects
        )

    def release(self, connection: SocketConnection, channel: str) -> None:
        """Stop holding live frames for ``connection`` on ``channel`` and send what was held."""
        sub = connection.subscriptions.get(channel)
        if sub is not None:
            CaughtUp(sub).finish(connection)

    # ------------------------------------------------------------------ presence, history

    def _spec_of(self, channel: str) -> ChannelSpec | None:
        """The spec serving the concrete ``channel``, or None when no listener matches it.

        Raises:
            InvalidChannel: ``channel`` is malformed.
        """
        try:
            validate_channel_name(channel, self._max_name_length)
        except ProtocolError as exc:
            raise InvalidChannel(f"invalid channel {channel!r}: {exc.message}") from None
        resolved = self._specs.resolve(channel)
        return resolved[0] if resolved is not None else None

    def _history_store(self) -> HistoryStore:
        broker = self.broker
        if not isinstance(broker, HistoryStore):
            raise BrokerError(f"the {broker.name} broker keeps no history")
        return broker

    def _presence_channel(self, channel: str) -> None:
        spec = self._spec_of(channel)
        if spec is None or not spec.presence:
            raise InvalidChannel(f"channel {channel!r} is not a presence channel")

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        """The members of a presence channel, on every process: each one's member info.

        Members of a process that stopped renewing (see ``presence_timeout``) are left out,
        and their leaves announced.

        Raises:
            InvalidChannel: ``channel`` is not a presence channel.
            BrokerError: the broker could not be read.
        """
        self._presence_channel(channel)
        members = await self.presence_tracker.members(channel)
        return [from_json(members[key]) for key in sorted(members)]

    async def presence_count(self, channel: str) -> int:
        """How many members a presence channel has, on every process (users, not connections).

        Raises:
            InvalidChannel: ``channel`` is not a presence channel.
            BrokerError: the broker could not be read.
        """
        self._presence_channel(channel)
        return await self.presence_tracker.count(channel)

    async def history(
        self, channel: str, *, limit: int | None = None, since: Position | None = None
    ) -> HistoryPage:
        """Read a history channel's retained messages, from any process.

        Without ``since``: the newest ``limit`` messages (all retained ones by default).
        With ``since``: the first ``limit`` messages after it, and whether they continue it
        (``recovered``); when they do not (another epoch, or messages no longer retained),
        the oldest retained ones.

        Raises:
            InvalidChannel: ``channel`` is not a history channel.
            BrokerError: the broker could not be read.
        """
        spec = self._spec_of(channel)
        retention = spec.retention if spec is not None else None
        if retention is None:
            raise InvalidChannel(f"channel {channel!r} is not a history channel")
        return await history_page(
            self._history_store(), topics.CHANNEL + channel, retention, limit, since
        )

    # ------------------------------------------------------------------ sending

    @overload
    async def broadcast(
        self,
        channel: str,
        event: str,
        data: Any = None,
        /,
        *,
        exclude: SocketConnection | str | None = None,
        key: str | None = None,
    ) -> Position | None: ...

    @overload
    async def broadcast(
        self,
        listener: ListenerRef,
        channel: str,
        event: str,
        data: Any = None,
        /,
        *,
        exclude: SocketConnection | str | None = None,
        key: str | None = None,
    ) -> Position | None: ...

    async def broadcast(
        self,
        *args: Any,
        exclude: SocketConnection | str | None = None,
        key: str | None = None,
    ) -> Position | None:
        """Send an event to every subscriber of a concrete channel, on every process.

        Two forms: ``broadcast(channel, event, data=None)``, and Envuso's
        ``broadcast(listener, channel, event, data=None)`` where ``listener`` is the channel
        listener class (or instance, or pattern string) that must serve ``channel``. Without a
        listener, the registered listener whose pattern matches ``channel`` serves it. A string
        first is the channel, unless it holds a ``*`` (a pattern: concrete channel names cannot)
        or four arguments are given.

        Only subscribers of exactly ``channel`` receive it (never those of other channels that
        the same pattern matches). The packet is encoded once; each process hands the same
        frame to each local subscriber. A recipient whose queue is full is handled by its
        overflow policy and does not delay the others. While this process's fan-out is behind
        (more than a few large fan-outs wait for their turn, or most recent recipients still
        have frames older than ``Limits.max_backlog_age`` waiting in the server), this waits
        until it has caught up before publishing: a publisher that outruns the sockets is
        slowed to their pace (see `fastapi_channels.core.fanout`).

        When the channel keeps a history (of this event), the message is stored first and
        delivered with its position, which is returned; if it cannot be stored (Redis
        unreachable) it is delivered nowhere and ``BrokerError`` is raised; the same holds,
        with `HistoryFull`, for a channel that holds no history yet when its listener's
        ``History.max_channels`` channels hold some already. Otherwise None is returned.

        With an idempotency ``key`` (given, or taken from the packet whose handler is running,
        see `fastapi_channels.core.idempotency`), the message is published at most once per
        channel and key within ``idempotency_window`` seconds, on every process: a second
        broadcast with the key publishes nothing and returns the first one's position (on a
        history channel). The check happens in the broker, atomically with the publish, so
        retrying after `OutcomeUnknown` is safe. Such a broadcast reaches this process's
        subscribers through the broker (no local delivery first), and is not ordered with
        broadcasts without a key. On a broker that is no ``IdempotencyStore`` the key is
        ignored. Without a key, nothing of this runs.

        With ``exclude``, every subscriber but that connection receives it, on every process:
        its id travels with the message, and only the process holding it delivers to a copy of
        its subscribers without it. A history channel stores the message once, as any other,
        and delivers it with its position to every other subscriber; a later catch-up of
        another connection (the same client reconnected, say) includes it.

        Args:
            args: ``(channel, event[, data])`` or ``(listener, channel, event[, data])``;
                ``data`` is anything JSON-serialisable by pydantic (models included).
            exclude: a connection (or its id, as sent in ``ready``) not to deliver to, usually
                the sender's.
            key: the idempotency key (see above).

        Raises:
            InvalidChannel: ``channel`` is malformed, no listener serves it, or the given
                ``listener``'s pattern does not match it.
            BrokerError: the broker could not publish (Redis unreachable): no other process
                received the message (on a plain channel without a key, this one's
                subscribers did).
            OutcomeUnknown: the broker took the message but did not confirm it in time (a
                `BrokerError`): it may have been delivered. Retry with the same key.
            HistoryFull: the channel would exceed ``History.max_channels`` (a `BrokerError`).
            TypeError: the arguments fit neither form.
        """
        listener, channel, event, data = _broadcast_arguments(args)
        history, group = self._check_channel(listener, channel)
        if self.fan_out.behind:
            await self.fan_out.wait_drained()
        frame = encode(event, data, channel)
        if exclude is not None:
            frame = topics.excluding(exclude if isinstance(exclude, str) else exclude.id, frame)
        if key is None:
            key = next_key()
        stored = history is not None and history.keeps(event)
        if key is not None and isinstance(self.broker, IdempotencyStore):
            retention = history.retention(group) if stored and history is not None else None
            published = await self.broker.publish_once(
                topics.CHANNEL + channel, frame, key, self.idempotency_window, retention
            )
            return published.position
        if not stored or history is None:
            await self.broker.publish(topics.CHANNEL + channel, frame)
            return None
        return await self._history_store().publish_stored(
            topics.CHANNEL + channel, frame, history.retention(group)
        )

    async def send_to_user(self, user_id: object, event: str, data: Any = None) -> None:
        """Send a plain event to every connection of one user, on every process."""
        payload = topics.USER_EVENT + encode(event, data)
        await self.broker.publish(topics.USER + str(user_id), payload)

    async def send_to_user_via_channel(
        self, user_id: object, listener: ListenerRef, channel: str, event: str, data: Any = None
    ) -> None:
        """Send a channel event to those connections of one user subscribed to ``channel``.

        Raises:
            InvalidChannel: as `broadcast`.
        """
        self._check_channel(listener, channel)
        head = topics.USER_CHANNEL_EVENT + channel.encode() + b"\n"
        await self.broker.publish(topics.USER + str(user_id), head + encode(event, data, channel))

    async def disconnect_user(self, user_id: object, reason: str = "disconnected") -> None:
        """Send ``disconnect`` with ``reason`` to every connection of one user and close them."""
        payload = topics.USER_DISCONNECT + reason.encode()
        await self.broker.publish(topics.USER + str(user_id), payload)

    async def subscribe_user(self, user_id: object, channel: str) -> None:
        """Subscribe every connection of one user to ``channel``, on every process.

        The server decides: neither ``is_authorised`` nor middleware runs, and
        ``Limits.max_subscriptions`` does not apply. Each connection whose client announced
        ``server-subscriptions`` (ours do) is subscribed and told with ``channels:subscribed``,
        followed by the member list and the position as for a subscription it asked for;
        connections already subscribed are left as they are, and others (Envuso's client, which
        throws on events of a channel it did not ask for) are left out. Connections the user
        opens later are not subscribed. Returns once the request is handed to the broker; each
        process applies it to its connections in the order requests arrive.

        Raises:
            InvalidChannel: ``channel`` is malformed or no listener serves it.
            BrokerError: the broker could not publish (Redis unreachable).
        """
        self._check_channel(None, channel)
        await self.broker.publish(
            topics.USER + str(user_id), topics.USER_SUBSCRIBE + channel.encode()
        )

    async def unsubscribe_user(self, user_id: object, channel: str) -> None:
        """Unsubscribe every connection of one user from ``channel``, on every process.

        Applies to every connection of the user subscribed to ``channel``, however it
        subscribed; each is told with ``channels:unsubscribed`` (a plain event, which Envuso's
        client ignores: it simply receives nothing more on that channel).

        Raises:
            InvalidChannel: ``channel`` is malformed.
            BrokerError: the broker could not publish (Redis unreachable).
        """
        try:
            validate_channel_name(channel, self._max_name_length)
        except ProtocolError as exc:
            raise InvalidChannel(f"invalid channel {channel!r}: {exc.message}") from None
        payload = topics.USER_UNSUBSCRIBE + channel.encode()
        await self.broker.publish(topics.USER + str(user_id), payload)

    def _server_subscription(
        self, targets: tuple[SocketConnection, ...], channel: str, subscribe: bool
    ) -> None:
        """Apply a server-side subscription change to a user's connections here, in turn."""
        if subscribe:
            targets = tuple(c for c in targets if SERVER_SUBSCRIPTIONS in c.features)
        if not targets:
            return
        step = (
            self._subscribe_all(targets, channel)
            if subscribe
            else self._leave_all(targets, channel)
        )
        task = asyncio.ensure_future(_after(self._last_change, step))
        self._last_change = task
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _subscribe_all(self, targets: tuple[SocketConnection, ...], channel: str) -> None:
        resolved = self._specs.resolve(channel)
        if resolved is None:
            logger.warning("subscribe_user: no channel listener serves %r here", channel)
            return
        spec, wildcard = resolved
        for connection in targets:
            if not connection.is_open or channel in connection.subscriptions:
                continue
            sub = Subscription(channel, wildcard, spec)
            try:
                await self.add_subscription(connection, sub)
            except BrokerError as exc:
                logger.warning(
                    "connection %s: cannot subscribe to %r: %s", connection.id, channel, exc
                )
                continue
            if self._connections.get(connection.id) is not connection:  # gone meanwhile
                await self.remove_subscription(connection, channel)
                continue
            caught = await self.catch_up(connection, sub) if spec.catch_up is not None else None
            fields = caught.fields if caught is not None else {}
            connection.push(encode(SUBSCRIBED, {"channel": channel, **fields}).decode())
            if caught is not None:
                caught.finish(connection)

    async def _leave_all(self, targets: tuple[SocketConnection, ...], channel: str) -> None:
        for connection in targets:
            if await self.remove_subscription(connection, channel):
                connection.push(encode(UNSUBSCRIBED, {"channel": channel}).decode())

    def _check_channel(
        self, listener: ListenerRef | None, channel: str
    ) -> tuple[History | None, str]:
        """Check that ``channel`` is served (by ``listener`` if given).

        Returns its history and the text of the pattern serving it (what
        ``History.max_channels`` counts under).

        Raises:
            InvalidChannel: the channel is malformed or not served.
        """
        if listener is None:
            spec = self._spec_of(channel)
            if spec is None:
                raise InvalidChannel(f"no channel listener serves {channel!r}")
            return spec.history, spec.pattern.text
        try:
            validate_channel_name(channel, self._max_name_length)
        except ProtocolError as exc:
            raise InvalidChannel(f"invalid channel {channel!r}: {exc.message}") from None
        if isinstance(listener, str):
            pattern = ChannelPattern.parse(listener)
            resolved = self._specs.resolve(channel)
            serving = resolved[0].pattern if resolved is not None else pattern
            history = resolved[0].history if resolved is not None else None
        else:
            pattern, history = listener.pattern, listener.history
            serving = pattern
        if pattern.match(channel) is None:
            raise InvalidChannel(f"channel {channel!r} does not match pattern {pattern.text!r}")
        return history, serving.text


async def _after(previous: asyncio.Future[None] | None, step: Coroutine[Any, Any, None]) -> None:
    """Run ``step`` once ``previous`` has finished, however it finished; log its failure."""
    if previous is not None and not previous.done():
        await asyncio.wait([previous])
    try:
        await step
    except Exception:
        logger.exception("a server-side subscription change failed")


def _broadcast_arguments(args: tuple[Any, ...]) -> tuple[ListenerRef | None, str, str, Any]:
    """Tell ``broadcast``'s two forms apart: a listener first, or the channel first.

    A first argument that is not a string is a listener. A string first is the channel, unless
    it holds a ``*`` or four arguments are given (a pattern string as the listener).
    """
    if not 2 <= len(args) <= 4:
        raise TypeError(
            "broadcast takes (channel, event[, data]) or (listener, channel, event[, data])"
        )
    first = args[0]
    if isinstance(first, str) and len(args) < 4 and "*" not in first:
        channel, event, *rest = args
        return None, channel, event, rest[0] if rest else None
    if len(args) < 3:
        raise TypeError("broadcast(listener, channel, event[, data]) needs a channel and an event")
    listener, channel, event, *rest = args
    return listener, channel, event, rest[0] if rest else None
