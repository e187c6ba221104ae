"""The socket server: who is connected, who is subscribed to what, and every way to send.

Each message is encoded once, published through the broker as bytes, and fanned out by every
process to its local subscribers: handing one shared frame to each connection, without awaiting
any socket (see `SocketConnection.push`). A channel whose listener declares an outgoing
filter is the one exception: its frames are decoded once per process and re-encoded only for the
recipients whose data the filter changed (see `fastapi_channels.core.outgoing`).

A fan-out to more than ``FAN_OUT_CHUNK`` connections is cut into chunks with a turn of the event
loop between them, so a broadcast to a huge channel never blocks the loop for long: a chunk is at
most ``FAN_OUT_CHUNK`` connections, and fewer when the last chunk showed that many would take
longer than ``FAN_OUT_TURN`` seconds, so a slow or busy machine is held no longer than a fast one.
Fan-outs then run strictly in arrival order, so every connection still gets its frames in
publish order.

Presence and history channels (see `fastapi_channels.core.presence` and
`fastapi_channels.wire.history`) add state in the broker: a broadcast on a history channel is
stored and delivered with its position, and a new subscriber of either kind is caught up (see
`fastapi_channels.core.catchup`) before it gets live frames. Other channels take none of these
paths.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from pydantic_core import from_json

from fastapi_channels.app.listeners import ChannelListener
from fastapi_channels.brokers.base import Broker, Position
from fastapi_channels.core.catchup import CaughtUp, Held, Reconnects
from fastapi_channels.core.presence import PRESENCE_TOPIC, Presence, members_frame
from fastapi_channels.core.stats import Stats
from fastapi_channels.wire.errors import BrokerError, CloseCode, InvalidChannel, ProtocolError
from fastapi_channels.wire.history import (
    NO_ENTRIES,
    History,
    HistoryPage,
    StoredMessage,
    position_data,
    recover,
    with_position,
)
from fastapi_channels.wire.patterns import ChannelPattern, PatternTable
from fastapi_channels.wire.protocol import encode, validate_channel_name

if TYPE_CHECKING:
    from fastapi_channels.app.listeners import Subscription
    from fastapi_channels.app.registry import ChannelRoute
    from fastapi_channels.core.connection import SocketConnection

__all__ = ["FAN_OUT_CHUNK", "SocketServer"]

logger = logging.getLogger("fastapi_channels.server")

ListenerRef = type[ChannelListener] | ChannelListener | str
"""A channel listener class, instance, or pattern string; sends check the channel against it."""

_CHANNEL = "c:"
_USER = "u:"
_EVENT = b"e"
_CHANNEL_EVENT = b"c"
_DISCONNECT = b"x"

FAN_OUT_CHUNK = 1000
"""Connections served in one go (a few milliseconds); a larger fan-out yields between chunks."""
FAN_OUT_TURN = 0.010
"""Seconds one chunk should take at most; the chunk size follows the measured speed."""
_FAN_OUT_MIN = 100
"""The smallest chunk, whatever the speed."""
_BACKLOG_LIMIT = 32
"""Fan-outs waiting for their turn above which `SocketServer.broadcast` waits."""


class _FanOut:
    """A fan-out in progress: the recipients fixed at arrival, and how far it got."""

    __slots__ = ("channel", "connections", "filtered", "frame", "index", "position")

    def __init__(
        self,
        connections: list[SocketConnection],
        frame: str,
        channel: str | None,
        position: Position | None = None,
        filtered: bool = True,
    ):
        self.connections = connections
        self.frame = frame
        self.channel = channel
        self.position = position
        self.filtered = filtered
        self.index = 0


class SocketServer:
    """Registry of this process's connections and subscriptions, and the sending API.

    Injectable: listener constructors and HTTP routes (``Inject(SocketServer)``) receive the
    running instance. Every send method returns once the message is handed to the broker; none
    waits for delivery, and a slow or dead recipient never delays the others.
    """

    def __init__(
        self, broker: Broker, *, max_name_length: int = 200, presence_timeout: float = 30.0
    ) -> None:
        self.broker = broker
        self._max_name_length = max_name_length
        self._routes: PatternTable[ChannelRoute] = PatternTable()
        self.presence_tracker = Presence(broker, presence_timeout)
        """This process's presence bookkeeping (see `fastapi_channels.core.presence`)."""
        self._connections: dict[str, SocketConnection] = {}
        self._channels: dict[str, set[SocketConnection]] = {}
        # A user's connections as a tuple: most users have one or two, and a 1-tuple is a
        # quarter of an empty set's size (this dict holds an entry per connected user).
        self._users: dict[str, tuple[SocketConnection, ...]] = {}
        self.reconnects = Reconnects(broker, self._channels, _CHANNEL)
        """Catches history channels up after a broker outage (see `.catchup`)."""
        self._removals: set[asyncio.Future[None]] = set()
        # One bound method for every connection's abandon callback, not one each.
        self._on_abandon: Callable[[SocketConnection], None] = self._remove_soon
        self._empty = asyncio.Event()
        self._empty.set()
        self._backlog: deque[_FanOut] = deque()
        self._drained: asyncio.Future[None] | None = None
        self._chunk = FAN_OUT_CHUNK  # connections per chunk, learned from the last one's time
        self.stats = Stats()
        """Counters since this server was created (see ``fastapi_channels.core.stats``)."""

    # ------------------------------------------------------------------ lifecycle

    def bind(self, routes: PatternTable[ChannelRoute]) -> None:
        """Give the server the started channel routes (for history and presence by name)."""
        self._routes = routes

    async def start(self) -> None:
        """Start the broker and begin fanning out what it delivers.

        Presence renewals start too when a channel listener declares presence.
        """
        await self.broker.start(self._on_message, self._on_stored)
        if any(route.presence for route in self._routes):
            self.presence_tracker.start()
        if any(route.catch_up is not None for route in self._routes):
            self.reconnects.start()

    async def stop(
        self, reason: str = "server shutting down", timeout: float = 5.0, spread: float = 0.0
    ) -> None:
        """Disconnect every local connection with ``reason`` (close 1012), then stop the broker.

        Each client gets a ``disconnect`` packet after what was already queued for it, with a
        random ``reconnect_after`` hint between 0 and ``spread`` seconds so that clients do not
        all come back at once; a peer that does not take its close within ``timeout`` seconds
        is dropped.
        """
        connections = list(self._connections.values())
        for connection in connections:
            hint = random.uniform(0, spread) if spread > 0 else None
            connection.close_soon(CloseCode.SERVICE_RESTART, reason, reconnect_after=hint)
        await asyncio.gather(*(c.wait_closed(timeout) for c in connections))
        if self.presence_tracker.running:  # leave while the broker can still announce it
            await asyncio.gather(*(self.remove_connection(c) for c in connections))
            await self.presence_tracker.stop()
        await self.reconnects.stop()
        await self.broker.stop()
        self._backlog.clear()
        self._release_waiters()

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
        return {name: len(subscribers) for name, subscribers in self._channels.items()}

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
        return list(self._channels.get(channel, ()))

    def health(self) -> dict[str, Any]:
        """Report this process's state for a health check, as JSON-ready values; no I/O.

        ``healthy`` is false while the broker cannot reach the other processes (Redis down or
        reconnecting): this process then still serves its own connections, but its messages do
        not reach other processes, nor theirs it. ``broker`` holds the broker's own report
        (`BrokerHealth`): its state, how many topics this
        process listens to, and the last transport error.
        """
        broker = self.broker.health()
        return {
            "healthy": broker.healthy,
            "connections": len(self._connections),
            "channels": len(self._channels),
            "users": len(self._users),
            "broker": broker.as_dict(),
        }

    async def add_connection(self, connection: SocketConnection) -> None:
        """Make ``connection`` reachable by id and by user."""
        self._connections[connection.id] = connection
        connection._on_abandon = self._on_abandon
        self._empty.clear()
        self.stats.connections_opened += 1
        key = connection.user_key
        if key is not None:
            peers = self._users.get(key, ())
            self._users[key] = (*peers, connection)
            if not peers:
                await self.broker.subscribe(_USER + key)

    def _remove_soon(self, connection: SocketConnection) -> None:
        """Forget a connection whose peer stopped reading, without waiting for its reader."""
        task = asyncio.ensure_future(self.remove_connection(connection))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def remove_connection(self, connection: SocketConnection) -> None:
        """Forget ``connection`` and all its subscriptions."""
        connection.mark_closed()
        for channel in list(connection.subscriptions):
            await self.remove_subscription(connection, channel)
        if self._connections.pop(connection.id, None) is None:
            return
        if not self._connections:
            self._empty.set()
        key = connection.user_key
        peers = self._users.get(key) if key is not None else None
        if peers is not None:
            rest = tuple(c for c in peers if c is not connection)
            if rest:
                self._users[key] = rest  # type: ignore[index]
            else:
                del self._users[key]  # type: ignore[arg-type]
                await self.broker.unsubscribe(_USER + key)  # type: ignore[operator]

    async def add_subscription(self, connection: SocketConnection, sub: Subscription) -> None:
        """Subscribe ``connection``; returns once broadcasts to the channel will reach it.

        On a presence or history channel, live frames are then held for the connection until
        `catch_up` has run (or `release` is called).
        """
        route: ChannelRoute | None = sub.route  # None for a subscription made by hand, in tests
        catch_up = route.catch_up if route is not None else None
        if catch_up is not None:
            catch_up.hold(sub.channel, connection)
        subscribers = self._channels.get(sub.channel)
        if subscribers is None:
            subscribers = self._channels[sub.channel] = set()
            try:
                await self._subscribe_topics(route, sub.channel)
            except BaseException:
                if not subscribers:
                    self._channels.pop(sub.channel, None)
                if catch_up is not None:
                    catch_up.release(sub.channel, connection)
                raise
        subscribers.add(connection)
        connection.subscriptions[sub.channel] = sub

    async def _subscribe_topics(self, route: ChannelRoute | None, channel: str) -> None:
        await self.broker.subscribe(_CHANNEL + channel)
        if route is not None and route.presence:
            try:
                await self.broker.subscribe(PRESENCE_TOPIC + channel)
            except BaseException:
                await self.broker.unsubscribe(_CHANNEL + channel)
                raise
            self.presence_tracker.watch(channel)

    async def remove_subscription(self, connection: SocketConnection, channel: str) -> bool:
        """Unsubscribe ``connection`` from ``channel``; returns whether it was subscribed."""
        sub = connection.subscriptions.pop(channel, None)
        if sub is None:
            return False
        route: ChannelRoute | None = sub.route
        presence = route is not None and route.presence
        if route is not None and route.catch_up is not None:
            route.catch_up.release(channel, connection)
        subscribers = self._channels.get(channel)
        if subscribers is not None:
            subscribers.discard(connection)
            if not subscribers:
                del self._channels[channel]
                self.reconnects.forget(channel)
                await self.broker.unsubscribe(_CHANNEL + channel)
                if presence:
                    self.presence_tracker.unwatch(channel)
                    await self.broker.unsubscribe(PRESENCE_TOPIC + channel)
        if presence:
            await self.presence_tracker.remove(connection, channel)
        return True

    async def catch_up(
        self, connection: SocketConnection, sub: Subscription, since: Position | None = None
    ) -> CaughtUp | None:
        """Prepare what a new subscriber of a presence or history channel gets first.

        Registers the connection's user as a member (presence), reads the member list and,
        for a history channel, the messages after ``since``. Returns None when nothing is held
        for this subscription (another kind of channel, or it was subscribed already). The
        caller sends the subscribe response with `CaughtUp.fields`, then calls
        `CaughtUp.finish`, which also stops holding live frames. Broker failures are
        logged, not raised: the member list is then left out, and a history channel answers
        without a position (``recovered: false`` when ``since`` was given).
        """
        route = sub.route
        catch_up = route.catch_up
        if catch_up is None or not catch_up.holding(sub.channel, connection):
            return None
        caught = CaughtUp(sub)
        if route.presence:
            tracker = self.presence_tracker
            await tracker.add(connection, sub)
            caught.skip = tracker.join_frame(sub.channel, connection.user_key)
            try:
                members = await self.presence_tracker.members(sub.channel)
            except BrokerError as exc:
                logger.warning("no member list for %r: %s", sub.channel, exc)
            else:
                caught.frames.append(Held(members_frame(sub.channel, members), filtered=False))
        if route.history is not None:
            await self._recover(caught, route.history, sub.channel, since)
        return caught

    async def _recover(
        self, caught: CaughtUp, history: History, channel: str, since: Position | None
    ) -> None:
        after = NO_ENTRIES if since is None else since.offset
        try:
            stored = await self.broker.read_stored(_CHANNEL + channel, history.retention, after)
        except BrokerError as exc:
            logger.warning("no history for %r: %s", channel, exc)
            if since is not None:
                caught.fields["recovered"] = False
            return
        position, missed, recovered = recover(stored, since)
        self.reconnects.note(channel, Position(stored.top, stored.epoch))
        caught.fields["position"] = position_data(position)
        if since is not None:
            caught.fields["recovered"] = recovered
        caught.last = position
        for entry in missed:
            at = Position(entry.offset, stored.epoch)
            caught.frames.append(Held(with_position(entry.data.decode(), at), at))
            caught.last = at

    def release(self, connection: SocketConnection, channel: str) -> None:
        """Stop holding live frames for ``connection`` on ``channel`` and send what was held."""
        sub = connection.subscriptions.get(channel)
        if sub is not None:
            CaughtUp(sub).finish(connection)

    # ------------------------------------------------------------------ presence, history

    def _route(self, channel: str, feature: str) -> ChannelRoute:
        try:
            validate_channel_name(channel, self._max_name_length)
        except ProtocolError as exc:
            raise InvalidChannel(f"invalid channel {channel!r}: {exc.message}") from None
        resolved = self._routes.resolve(channel)
        route = resolved[0] if resolved is not None else None
        if route is None or not (route.presence if feature == "presence" else route.history):
            raise InvalidChannel(f"channel {channel!r} is not a {feature} channel")
        return route

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        """The members of a presence channel, on every process: each one's member info.

        Members of a process that stopped renewing (see ``presence_timeout``) are left out,
        and their leaves announced.

        Raises:
            InvalidChannel: ``channel`` is not a presence channel.
            BrokerError: the broker could not be read.
        """
        self._route(channel, "presence")
        members = await self.presence_tracker.members(channel)
        return [from_json(members[key]) for key in sorted(members)]

    async def presence_count(self, channel: str) -> int:
        """How many members a presence channel has, on every process (users, not connections).

        Raises:
            InvalidChannel: ``channel`` is not a presence channel.
            BrokerError: the broker could not be read.
        """
        self._route(channel, "presence")
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
        history = self._route(channel, "history").history
        assert history is not None
        after = 0 if since is None else since.offset
        stored = await self.broker.read_stored(_CHANNEL + channel, history.retention, after)
        recovered: bool | None = None
        entries = stored.entries
        if since is not None:
            recovered = recover(stored, since)[2]
            if not recovered and since.epoch != stored.epoch:
                everything = await self.broker.read_stored(_CHANNEL + channel, history.retention)
                entries = everything.entries
            entries = entries[:limit] if limit is not None else entries
        elif limit is not None:
            entries = entries[-limit:] if limit > 0 else []
        messages = []
        for entry in entries:
            packet = from_json(entry.data)
            position = Position(entry.offset, stored.epoch)
            messages.append(StoredMessage(position, packet["event"], packet.get("data")))
        return HistoryPage(messages, Position(stored.top, stored.epoch), recovered)

    # ------------------------------------------------------------------ sending

    async def broadcast(
        self, listener: ListenerRef, channel: str, event: str, data: Any = None
    ) -> Position | None:
        """Send ``event`` to every subscriber of the concrete ``channel``, on every process.

        Only subscribers of exactly ``channel`` receive it (never those of other channels that
        the same pattern matches). The packet is encoded once; each process hands the same
        frame to each local subscriber. A recipient whose queue is full is handled by its
        overflow policy and does not delay the others. While more than a few large fan-outs
        wait for their turn in this process, this waits for them first (backpressure on a
        publisher that outruns the sockets).

        When the listener keeps a history (of this event), the message is stored first and
        delivered with its position, which is returned; if it cannot be stored (Redis
        unreachable) it is delivered nowhere and ``BrokerError`` is raised. Otherwise None is
        returned.

        Args:
            listener: the listener class (or instance, or pattern) that serves ``channel``.
            channel: the concrete channel name.
            event: the event name.
            data: anything JSON-serialisable by pydantic (models included).

        Raises:
            InvalidChannel: ``channel`` is malformed or ``listener``'s pattern does not match it.
            BrokerError: the broker could not publish (Redis unreachable).
        """
        self._check_channel(listener, channel)
        if len(self._backlog) > _BACKLOG_LIMIT:
            await self._wait_drained()
        history = self._history_of(listener, channel)
        if history is None or not history.keeps(event):
            await self.broker.publish(_CHANNEL + channel, encode(event, data, channel))
            return None
        frame = encode(event, data, channel)
        return await self.broker.publish_stored(_CHANNEL + channel, frame, history.retention)

    def _history_of(self, listener: ListenerRef, channel: str) -> History | None:
        if not isinstance(listener, str):
            return listener.history
        resolved = self._routes.resolve(channel)
        return resolved[0].history if resolved is not None else None

    async def send_to_user(self, user_id: object, event: str, data: Any = None) -> None:
        """Send a plain event to every connection of one user, on every process."""
        await self.broker.publish(_USER + str(user_id), _EVENT + encode(event, data))

    async def send_to_user_via_channel(
        self, user_id: object, listener: ListenerRef, channel: str, event: str, data: Any = None
    ) -> None:
        """Send a channel event to those connections of one user subscribed to ``channel``.

        Raises:
            InvalidChannel: as `broadcast`.
        """
        self._check_channel(listener, channel)
        payload = _CHANNEL_EVENT + channel.encode() + b"\n" + encode(event, data, channel)
        await self.broker.publish(_USER + str(user_id), payload)

    async def disconnect_user(self, user_id: object, reason: str = "disconnected") -> None:
        """Send ``disconnect`` with ``reason`` to every connection of one user and close them."""
        await self.broker.publish(_USER + str(user_id), _DISCONNECT + reason.encode())

    def _check_channel(self, listener: ListenerRef, channel: str) -> None:
        try:
            validate_channel_name(channel, self._max_name_length)
        except ProtocolError as exc:
            raise InvalidChannel(f"invalid channel {channel!r}: {exc.message}") from None
        pattern = ChannelPattern.parse(listener) if isinstance(listener, str) else listener.pattern
        if pattern.match(channel) is None:
            raise InvalidChannel(f"channel {channel!r} does not match pattern {pattern.text!r}")

    # ------------------------------------------------------------------ fan-out

    def _on_message(self, topic: str, data: bytes) -> None:
        if topic.startswith(_CHANNEL):
            name = topic[2:]
            subscribers = self._channels.get(name)
            if subscribers:
                self._fan_out(subscribers, data.decode(), name)
            return
        if topic.startswith(PRESENCE_TOPIC):
            self._on_announcement(topic[2:], data)
            return
        targets = self._users.get(topic[2:])
        if not targets:
            return
        kind, body = data[:1], data[1:]
        if kind == _EVENT:
            self._fan_out(targets, body.decode(), None)
        elif kind == _CHANNEL_EVENT:
            channel, _, frame = body.partition(b"\n")
            name = channel.decode()
            self._fan_out([c for c in targets if name in c.subscriptions], frame.decode(), name)
        elif kind == _DISCONNECT:
            reason = body.decode()
            for connection in list(targets):
                connection.close_soon(CloseCode.NORMAL, reason)
        else:
            logger.error("dropping a message of unknown kind %r on %s", kind, topic)

    def _on_stored(self, topic: str, data: bytes, position: Position) -> None:
        """Fan out a stored message of a history channel, with its position."""
        name = topic[2:]
        subscribers = self._channels.get(name)
        if subscribers:
            self.reconnects.saw(name, position)
            self._fan_out(subscribers, with_position(data.decode(), position), name, position)

    def _on_announcement(self, name: str, data: bytes) -> None:
        """Fan out a presence announcement (a plain event, never filtered)."""
        subscribers = self._channels.get(name)
        if subscribers:
            self._fan_out(subscribers, data.decode(), name, filtered=False)

    def _fan_out(
        self,
        connections: Collection[SocketConnection],
        frame: str,
        channel: str | None,
        position: Position | None = None,
        filtered: bool = True,
    ) -> None:
        """Hand ``frame`` to ``connections``: now if few and nothing waits, else in turn.

        ``position`` and ``filtered`` matter on presence and history channels only (see
        `_deliver`).
        """
        if not self._backlog and len(connections) <= FAN_OUT_CHUNK:
            _deliver(connections, channel, frame, position, filtered)
            return
        self._backlog.append(_FanOut(list(connections), frame, channel, position, filtered))
        if len(self._backlog) == 1:
            self._drain()

    def _drain(self) -> None:
        """Serve one chunk of waiting fan-outs, oldest first, and size the next from its time.

        A recipient that unsubscribed from the channel since the message arrived is skipped:
        no connection is sent an event for a channel it is not subscribed to.
        """
        backlog = self._backlog
        budget = size = self._chunk
        started = time.perf_counter()
        while backlog and budget > 0:
            job = backlog[0]
            start = job.index
            end = min(start + budget, len(job.connections))
            chunk = job.connections[start:end]
            channel = job.channel
            if channel is not None:
                chunk = [c for c in chunk if channel in c.subscriptions]
            _deliver(chunk, channel, job.frame, job.position, job.filtered)
            budget -= end - start
            job.index = end
            if end == len(job.connections):
                backlog.popleft()
        served, took = size - budget, time.perf_counter() - started
        if took > 0:
            fitting = int(served * FAN_OUT_TURN / took)
            self._chunk = max(_FAN_OUT_MIN, min(FAN_OUT_CHUNK, fitting))
        if backlog:
            asyncio.get_running_loop().call_soon(self._drain)
        else:
            self._release_waiters()

    async def _wait_drained(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drained)

    def _release_waiters(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)


def _deliver(
    connections: Collection[SocketConnection],
    channel: str | None,
    frame: str,
    position: Position | None = None,
    filtered: bool = True,
) -> None:
    """Hand over an event; a channel event goes through its listener's outgoing filter, if any.

    On a presence or history channel, the frame is held for subscribers being caught up;
    ``position`` is a stored message's, and ``filtered=False`` (presence announcements) skips
    the outgoing filter.
    """
    if not connections:
        return
    if channel is None:
        _fan_out(connections, frame)
        return
    subscription = next(iter(connections)).subscriptions.get(channel)
    route = subscription.route if subscription is not None else None
    if route is not None and route.catch_up is not None:
        held = Held(frame, position, filtered)
        route.catch_up.deliver(connections, subscription, held)  # type: ignore[arg-type]
        return
    outgoing = route.outgoing if route is not None else None
    if outgoing is None or subscription is None:
        _fan_out(connections, frame)
    else:
        outgoing.fan_out(connections, subscription, frame)


def _fan_out(connections: Iterable[SocketConnection], frame: str) -> None:
    for connection in connections:
        connection.push(frame)
