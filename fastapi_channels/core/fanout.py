"""The fan-out: what the broker delivers, handed to this process's subscribers in order.

Every process receives each message once from its broker, decodes the bytes once and hands the
same ``str`` to each local recipient, synchronously, without awaiting any socket (see
`SocketConnection.push`). A channel frame takes one last step,
`fastapi_channels.core.outgoing.send`: through the channel's outgoing filter when it has one,
else unchanged; on a presence or history channel it is first held for subscribers being caught
up (`fastapi_channels.core.channel.CatchUp`). A broadcast that excludes a connection carries its
id (see `fastapi_channels.core.topics`); only the process holding that connection delivers to a
copy of the subscribers without it, every other process to the plain set.

A fan-out to more than ``FAN_OUT_CHUNK`` connections is cut into chunks with a turn of the event
loop between them, so a broadcast to a huge channel never blocks the loop for long: a chunk is
at most ``FAN_OUT_CHUNK`` connections, and fewer when the last chunk's loop turn (the chunk
and the socket writes that follow it) showed that many would take longer than
``FAN_OUT_TURN`` seconds, so a slow or busy machine is held no longer than a fast one.
Fan-outs then run strictly in arrival order, so every connection still gets its frames in
publish order.

The fan-out is *behind* when more than ``BACKLOG_LIMIT`` fan-outs wait for their turn, or when
it holds frames older than ``max_lag`` seconds, or will: a fan-out has waited that long for its
turn, or the recipients of the fan-outs waiting would take longer than that to serve at the
pace of the last loop turns (so a publisher quicker than the fan-out is held before the backlog
has aged, not after it overshot), or most of the recent fan-outs' probes are still in the
server that long after the fan-out handed them over. The one fan-out being served counts in
neither: a fan-out to 100,000 connections takes what it takes. A probe is one recipient of
a fan-out, taken in turn (`SocketConnection.mark`): its frame is still in the server while
it waits in the connection's queue or, under uvicorn with direct writes, in the transport's
write buffer (`SocketConnection.passed`). More than half of the distinct recipients probed,
and at least two, must be late, so that one slow recipient, which its overflow policy deals
with, does not hold every publisher. While the fan-out is behind, publishers of this process wait
(`FanOut.wait_drained`, for the bound in time at most ``WAIT_MAX`` per publish), so a
publisher that outruns the sockets feels it and the server's backlog stays bounded in time,
not only in count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Final, TypeAlias

from fastapi_channels.core import topics
from fastapi_channels.core.channel import Held, LiveChannel
from fastapi_channels.core.outgoing import send
from fastapi_channels.core.presence import PRESENCE_TOPIC
from fastapi_channels.wire.errors import CloseCode
from fastapi_channels.wire.history import with_position

if TYPE_CHECKING:
    from fastapi_channels.core.catchup import Reconnects
    from fastapi_channels.core.connection import Mark, SocketConnection
    from fastapi_channels.wire.stored import Position

__all__ = [
    "BACKLOG_LIMIT",
    "FAN_OUT_CHUNK",
    "FAN_OUT_PROBES",
    "FAN_OUT_TURN",
    "WAIT_MAX",
    "FanOut",
    "UserSubscriptions",
    "deliver",
]

logger = logging.getLogger("fastapi_channels.server")

FAN_OUT_CHUNK: Final = 1000
"""Connections served in one go (a few milliseconds); a larger fan-out yields between chunks."""
FAN_OUT_TURN: Final = 0.010
"""Seconds one chunk should take at most; the chunk size follows the measured speed."""
_FAN_OUT_MIN: Final = 100
"""The smallest chunk, whatever the speed."""
BACKLOG_LIMIT: Final = 32
"""Fan-outs waiting for their turn above which publishers wait (`FanOut.wait_drained`)."""
WAIT_MAX: Final = 1.0
"""Seconds one publish waits at most for the fan-out to catch up in time (not in count)."""
FAN_OUT_PROBES: Final = 9
"""Recent fan-outs whose probe decides whether the fan-out is behind (a majority must be)."""
_POLL_MAX: Final = 0.005
"""Seconds between two looks at the probes while publishers wait (less for a small max_lag)."""

UserSubscriptions: TypeAlias = "Callable[[tuple[SocketConnection, ...], str, bool], None]"
"""Applies a server-side subscription change: ``(connections, channel, subscribe)``."""


def _fit(served: int, seconds: float, most: int) -> int:
    """How many connections fit in ``FAN_OUT_TURN`` at the pace of ``served`` in ``seconds``.

    At most ``most``, at least ``_FAN_OUT_MIN``; ``most`` when nothing was measured.
    """
    if seconds <= 0 or served <= 0:
        return most
    return max(_FAN_OUT_MIN, min(most, int(served * FAN_OUT_TURN / seconds)))


class _Job:
    """A fan-out in progress: the recipients fixed at arrival, and how far it got."""

    __slots__ = ("arrived", "connections", "filtered", "frame", "index", "live", "position")

    def __init__(
        self,
        connections: list[SocketConnection],
        frame: str,
        live: LiveChannel | None,
        position: Position | None,
        filtered: bool,
        arrived: float,
    ):
        self.arrived = arrived
        self.connections = connections
        self.frame = frame
        self.live = live
        self.position = position
        self.filtered = filtered
        self.index = 0


def deliver(
    connections: Collection[SocketConnection],
    frame: str,
    live: LiveChannel | None,
    position: Position | None = None,
    filtered: bool = True,
) -> None:
    """Hand ``frame`` to ``connections`` now, a channel's through its holding and filter.

    A plain event (``live`` None) goes to each connection as it is; a channel event is held for
    subscribers being caught up, then goes through the channel's outgoing filter, if any.

    ``position`` is a stored message's; ``filtered=False`` (presence announcements) skips the
    outgoing filter.
    """
    if not connections:
        return
    if live is None:
        for connection in connections:
            connection.push(frame)
        return
    subscription = live.subscription
    catch_up = subscription.spec.catch_up
    if catch_up is not None:
        connections = catch_up.keep(live.name, connections, Held(frame, position, filtered))
    send(connections, subscription, frame, filtered)


class FanOut:
    """This process's side of every broker message: routing by topic, then delivery in turn.

    Args:
        channels: the server's live channels by name (read, never changed here).
        users: the server's connections by user key (read, never changed here).
        reconnects: told of each stored message delivered (its position).
        connections: the server's connections by id (read, never changed here), to find the
            connection a broadcast excludes.
        subscriptions: called with the user's connections here, the channel and True
            (subscribe) or False (unsubscribe) for each server-side subscription change; it
            must not block.
        max_lag: seconds frames may stay in the server before publishers wait (see the
            module); None for no bound in time (the count bound, ``BACKLOG_LIMIT``, holds).
        clock: the time source for ``max_lag``, the chunk sizes and the pace (monotonic
            seconds, high resolution: `time.perf_counter` by default).
    """

    def __init__(
        self,
        channels: Mapping[str, LiveChannel],
        users: Mapping[str, tuple[SocketConnection, ...]],
        reconnects: Reconnects,
        connections: Mapping[str, SocketConnection] | None = None,
        subscriptions: UserSubscriptions | None = None,
        max_lag: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._channels = channels
        self._users = users
        self._reconnects = reconnects
        self.control: Callable[[str, bytes], None] | None = None
        """Where messages on control topics go (see `fastapi_channels.core.cluster`)."""
        self._connections: Mapping[str, SocketConnection] = (
            connections if connections is not None else {}
        )
        self._subscriptions = subscriptions
        self._backlog: deque[_Job] = deque()
        self._drained: asyncio.Future[None] | None = None
        self._chunk = FAN_OUT_CHUNK  # connections per chunk, learned from the last one's time
        self._queued = 0  # recipients of the backlog not served yet
        self._pace = 0.0  # recipients served per second over the last whole loop turn
        self._last_turn: tuple[float, int] | None = None  # the last chunk's start and size
        self._max_lag = max_lag
        self._clock = clock
        # One recipient of each recent fan-out: (hand-over time, connection, its mark after).
        self._probes: deque[tuple[float, SocketConnection, Mark]] = deque(maxlen=FAN_OUT_PROBES)
        self._turn = 0  # which recipient of the next fan-out is probed
        self._poll: asyncio.TimerHandle | None = None

    @property
    def behind(self) -> bool:
        """Whether publishers should wait: too many fan-outs wait, or frames are too old.

        Cheap enough to ask on every publish: it looks at the oldest waiting fan-out and at
        most ``FAN_OUT_PROBES`` probes.
        """
        backlog = self._backlog
        if len(backlog) > BACKLOG_LIMIT:
            return True
        max_lag = self._max_lag
        if max_lag is None:
            return False
        before = self._clock() - max_lag
        if backlog:  # a fan-out waiting for its turn (the one being served is not waiting)
            waiting = backlog[0] if backlog[0].index == 0 else None
            if waiting is None and len(backlog) > 1:
                waiting = backlog[1]
            if waiting is not None and waiting.arrived < before:
                return True
            if waiting is not None and self._pace > 0.0:
                serving = backlog[0]
                ahead = self._queued
                if serving is not waiting:
                    ahead -= len(serving.connections) - serving.index
                if ahead > self._pace * max_lag:
                    return True
        # Recipients, not probes: one slow connection probed many times is still one.
        probed = {id(connection) for _, connection, _ in self._probes}
        late = {
            id(connection)
            for handed, connection, mark in self._probes
            if handed < before and not connection.passed(mark)
        }
        return len(late) > 1 and len(late) * 2 > len(probed)

    def _probe(self, connections: Collection[SocketConnection], handed: float) -> None:
        """Remember one recipient of a fan-out that just completed, taken in turn."""
        self._turn += 1
        if not isinstance(connections, Sequence):
            connections = tuple(connections)
        if connections:
            connection = connections[self._turn % len(connections)]
            self._probes.append((handed, connection, connection.mark()))

    # ------------------------------------------------------------------ from the broker

    def on_message(self, topic: str, data: bytes) -> None:
        """Route one message the broker delivered: a channel's, a user's or an announcement."""
        if topic.startswith(topics.CHANNEL):
            live = self._channels.get(topic[2:])
            if live is not None:
                if data[:1] == topics.EXCLUDING:
                    excluded, data = topics.split_excluded(data)
                    self.send(self._others(live, excluded), data.decode(), live)
                else:
                    self.send(live.subscribers, data.decode(), live)
            return
        if topic.startswith(PRESENCE_TOPIC):
            live = self._channels.get(topic[2:])
            if live is not None:  # a presence announcement: a plain event, never filtered
                self.send(live.subscribers, data.decode(), live, filtered=False)
            return
        if topic.startswith(topics.CONTROL):
            if self.control is not None:
                self.control(topic, data)
            return
        targets = self._users.get(topic[2:])
        if targets:
            self._on_user_message(topic, targets, data)

    def _on_user_message(
        self, topic: str, targets: tuple[SocketConnection, ...], data: bytes
    ) -> None:
        kind, body = data[:1], data[1:]
        if kind == topics.USER_EVENT:
            self.send(targets, body.decode(), None)
        elif kind == topics.USER_CHANNEL_EVENT:
            channel, _, frame = body.partition(b"\n")
            live = self._channels.get(channel.decode())
            if live is not None:
                subscribed = [c for c in targets if c in live.subscribers]
                self.send(subscribed, frame.decode(), live)
        elif kind == topics.USER_DISCONNECT:
            reason = body.decode()
            for connection in targets:
                connection.close_soon(CloseCode.NORMAL, reason)
        elif kind in (topics.USER_SUBSCRIBE, topics.USER_UNSUBSCRIBE):
            if self._subscriptions is not None:
                self._subscriptions(targets, body.decode(), kind == topics.USER_SUBSCRIBE)
        else:
            logger.error("dropping a message of unknown kind %r on %s", kind, topic)

    def on_stored(self, topic: str, data: bytes, position: Position) -> None:
        """Route a stored message of a history channel: delivered with its position."""
        name = topic[2:]
        live = self._channels.get(name)
        if live is not None and live.subscribers:
            self._reconnects.saw(name, position)
            excluded, data = topics.split_excluded(data)
            recipients = live.subscribers if excluded is None else self._others(live, excluded)
            self.send(recipients, with_position(data.decode(), position), live, position)

    def _others(self, live: LiveChannel, excluded: str | None) -> Collection[SocketConnection]:
        """The channel's subscribers here but the connection ``excluded`` (an id).

        Copies the subscribers only when the excluded connection is one of them, on this
        process; elsewhere the plain set is delivered to, as for any broadcast.
        """
        subscribers = live.subscribers
        connection = self._connections.get(excluded) if excluded is not None else None
        if connection is None or connection not in subscribers:
            return subscribers
        return subscribers - {connection}

    # ------------------------------------------------------------------ in turn

    def send(
        self,
        connections: Collection[SocketConnection],
        frame: str,
        live: LiveChannel | None,
        position: Position | None = None,
        filtered: bool = True,
    ) -> None:
        """Hand ``frame`` to ``connections``: now if few and nothing waits, else in turn."""
        if not connections:
            return
        if not self._backlog and len(connections) <= FAN_OUT_CHUNK:
            deliver(connections, frame, live, position, filtered)
            if self._max_lag is not None:
                self._probe(connections, self._clock())
            return
        job = _Job(list(connections), frame, live, position, filtered, self._clock())
        self._backlog.append(job)
        self._queued += len(job.connections)
        if len(self._backlog) == 1:
            self._drain()

    def _drain(self) -> None:
        """Serve one chunk of waiting fan-outs, oldest first, and size the next from its time.

        A chunk's size follows the time of the last whole loop turn a chunk took, measured
        from its start to the start of the next: that includes what the event loop does
        after the chunk, above all writing the frames to the sockets (uvloop sends queued
        writes once per turn, a system call per recipient, often more time than the chunk
        itself). Within a turn, a chunk that alone took too long shrinks the next.

        A recipient that unsubscribed from the channel since the message arrived is skipped:
        no connection is sent an event for a channel it is not subscribed to.
        """
        backlog = self._backlog
        started = self._clock()
        if self._last_turn is not None:  # continuing: size from the previous chunk's turn
            before, served_before = self._last_turn
            self._chunk = _fit(served_before, started - before, FAN_OUT_CHUNK)
            if started > before:
                self._pace = served_before / (started - before)
        budget = size = self._chunk
        while backlog and budget > 0:
            job = backlog[0]
            start = job.index
            end = min(start + budget, len(job.connections))
            chunk = job.connections[start:end]
            live = job.live
            if live is not None:
                name = live.name
                chunk = [c for c in chunk if name in c.subscriptions]
            deliver(chunk, job.frame, live, job.position, job.filtered)
            budget -= end - start
            job.index = end
            if end == len(job.connections):
                backlog.popleft()
                if self._max_lag is not None:  # timed from now: its frames left the fan-out
                    self._probe(job.connections, self._clock())
        served = size - budget
        self._queued -= served
        self._chunk = _fit(served, self._clock() - started, self._chunk)
        if backlog:
            self._last_turn = (started, served)
            asyncio.get_running_loop().call_soon(self._drain)
        else:
            self._last_turn = None
            self._release_waiters()

    async def wait_drained(self) -> None:
        """Return once the fan-out is no longer `behind` (at once if it is not).

        Waiters share one future, released when the waiting fan-outs are served and, while
        the fan-out is behind in time, every few milliseconds (at most ``max_lag / 2``) to
        look again; so it waits as long as the sockets take to catch up, but for the bound in
        time at most ``WAIT_MAX`` seconds per call: recipients that read nothing at all must not
        hold a publisher for ever, and the frames published after that fill their queues until
        their overflow policy applies. Shielded: cancelling one waiter leaves the others
        waiting.
        """
        started = self._clock()
        while self.behind:  # each turn waits for a drain or one poll; bounded in time below
            if len(self._backlog) <= BACKLOG_LIMIT and self._clock() - started >= WAIT_MAX:
                return  # peers that read nothing: left to their queues' overflow policy
            if self._drained is None:
                loop = asyncio.get_running_loop()
                self._drained = loop.create_future()
                if self._max_lag is not None:
                    delay = min(_POLL_MAX, self._max_lag / 2)
                    self._poll = loop.call_later(delay, self._release_waiters)
            await asyncio.shield(self._drained)

    def clear(self) -> None:
        """Drop every waiting fan-out (the server stops) and release the waiting publishers."""
        self._backlog.clear()
        self._queued = 0
        self._probes.clear()
        self._release_waiters()

    def _release_waiters(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)
