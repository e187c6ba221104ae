"""The socket server: who is connected, who is subscribed to what, and every way to send.

Each message is encoded once, published through the broker as bytes, and fanned out by every
process to its local subscribers: handing one shared frame to each connection, without awaiting
any socket (see `SocketConnection.push`). A channel whose listener declares an outgoing
filter is the one exception: its frames are decoded once per process and re-encoded only for the
recipients whose data the filter changed (see `fastapi_channels.outgoing`).

A fan-out to more than ``FAN_OUT_CHUNK`` connections is cut into chunks with a turn of the event
loop between them, so a broadcast to a huge channel never blocks the loop for long; fan-outs
then run strictly in arrival order, so every connection still gets its frames in publish order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import deque
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from fastapi_channels.brokers.base import Broker
from fastapi_channels.errors import CloseCode, InvalidChannel, ProtocolError
from fastapi_channels.listeners import ChannelListener
from fastapi_channels.patterns import ChannelPattern
from fastapi_channels.protocol import encode, validate_channel_name
from fastapi_channels.stats import Stats

if TYPE_CHECKING:
    from fastapi_channels.connection import SocketConnection
    from fastapi_channels.listeners import Subscription

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
_BACKLOG_LIMIT = 32
"""Fan-outs waiting for their turn above which `SocketServer.broadcast` waits."""


class _FanOut:
    """A fan-out in progress: the recipients fixed at arrival, and how far it got."""

    __slots__ = ("channel", "connections", "frame", "index")

    def __init__(self, connections: list[SocketConnection], frame: str, channel: str | None):
        self.connections = connections
        self.frame = frame
        self.channel = channel
        self.index = 0


class SocketServer:
    """Registry of this process's connections and subscriptions, and the sending API.

    Injectable: listener constructors and HTTP routes (``Inject(SocketServer)``) receive the
    running instance. Every send method returns once the message is handed to the broker; none
    waits for delivery, and a slow or dead recipient never delays the others.
    """

    def __init__(self, broker: Broker, *, max_name_length: int = 200) -> None:
        self.broker = broker
        self._max_name_length = max_name_length
        self._connections: dict[str, SocketConnection] = {}
        self._channels: dict[str, set[SocketConnection]] = {}
        # A user's connections as a tuple: most users have one or two, and a 1-tuple is a
        # quarter of an empty set's size (this dict holds an entry per connected user).
        self._users: dict[str, tuple[SocketConnection, ...]] = {}
        self._removals: set[asyncio.Future[None]] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._backlog: deque[_FanOut] = deque()
        self._drained: asyncio.Future[None] | None = None
        self.stats = Stats()
        """Counters since this server was created (see ``fastapi_channels.stats``)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the broker and begin fanning out what it delivers."""
        await self.broker.start(self._on_message)

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
        connection._on_abandon = self._remove_soon
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
        """Subscribe ``connection``; returns once broadcasts to the channel will reach it."""
        subscribers = self._channels.get(sub.channel)
        if subscribers is None:
            subscribers = self._channels[sub.channel] = set()
            try:
                await self.broker.subscribe(_CHANNEL + sub.channel)
            except BaseException:
                if not subscribers:
                    self._channels.pop(sub.channel, None)
                raise
        subscribers.add(connection)
        connection.subscriptions[sub.channel] = sub

    async def remove_subscription(self, connection: SocketConnection, channel: str) -> bool:
        """Unsubscribe ``connection`` from ``channel``; returns whether it was subscribed."""
        if connection.subscriptions.pop(channel, None) is None:
            return False
        subscribers = self._channels.get(channel)
        if subscribers is not None:
            subscribers.discard(connection)
            if not subscribers:
                del self._channels[channel]
                await self.broker.unsubscribe(_CHANNEL + channel)
        return True

    # ------------------------------------------------------------------ sending

    async def broadcast(
        self, listener: ListenerRef, channel: str, event: str, data: Any = None
    ) -> None:
        """Send ``event`` to every subscriber of the concrete ``channel``, on every process.

        Only subscribers of exactly ``channel`` receive it (never those of other channels that
        the same pattern matches). The packet is encoded once; each process hands the same
        frame to each local subscriber. A recipient whose queue is full is handled by its
        overflow policy and does not delay the others. While more than a few large fan-outs
        wait for their turn in this process, this waits for them first (backpressure on a
        publisher that outruns the sockets).

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
        await self.broker.publish(_CHANNEL + channel, encode(event, data, channel))

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

    def _fan_out(
        self, connections: Collection[SocketConnection], frame: str, channel: str | None
    ) -> None:
        """Hand ``frame`` to ``connections``: now if few and nothing waits, else in turn."""
        if not self._backlog and len(connections) <= FAN_OUT_CHUNK:
            _deliver(connections, channel, frame)
            return
        self._backlog.append(_FanOut(list(connections), frame, channel))
        if len(self._backlog) == 1:
            self._drain()

    def _drain(self) -> None:
        """Serve up to ``FAN_OUT_CHUNK`` recipients of waiting fan-outs, oldest first.

        A recipient that unsubscribed from the channel since the message arrived is skipped:
        no connection is sent an event for a channel it is not subscribed to.
        """
        backlog = self._backlog
        budget = FAN_OUT_CHUNK
        while backlog and budget > 0:
            job = backlog[0]
            start = job.index
            end = min(start + budget, len(job.connections))
            chunk = job.connections[start:end]
            channel = job.channel
            if channel is not None:
                chunk = [c for c in chunk if channel in c.subscriptions]
            _deliver(chunk, channel, job.frame)
            budget -= end - start
            job.index = end
            if end == len(job.connections):
                backlog.popleft()
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


def _deliver(connections: Collection[SocketConnection], channel: str | None, frame: str) -> None:
    """Hand over an event; a channel event goes through its listener's outgoing filter, if any."""
    if not connections:
        return
    if channel is None:
        _fan_out(connections, frame)
        return
    subscription = next(iter(connections)).subscriptions.get(channel)
    route = subscription.route if subscription is not None else None
    outgoing = route.outgoing if route is not None else None
    if outgoing is None or subscription is None:
        _fan_out(connections, frame)
    else:
        outgoing.fan_out(connections, subscription, frame)


def _fan_out(connections: Iterable[SocketConnection], frame: str) -> None:
    for connection in connections:
        connection.push(frame)
