"""Catching a new subscriber up: what it gets before live frames, and holding those meanwhile.

Subscribing to a presence or history channel takes a few reads from the broker (the member
list, the missed messages). Live frames for the channel may arrive during those reads: they
are held for that connection only (`CatchUp`), then sent after the subscribe response,
the member list and the missed messages, skipping stored messages the connection already got
(same epoch, offset not above the last one sent). So a client sees, in order and once: the
response, ``channels:presence``, the missed messages, then live ones.

Only routes with presence or history have a `CatchUp`; other channels keep the plain
fan-out.

A whole process catches up too (`Reconnects`): while its broker is disconnected from
Redis, the stored messages and presence announcements other processes publish do not reach it.
When the broker is connected again, each local history channel is read from the last position
this process delivered, and what is missing goes to its subscribers, held and de-duplicated as
above; each local presence channel's subscribers get the member list again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi_channels.brokers.base import Broker, BrokerState, Position
from fastapi_channels.core.presence import PRESENCE_TOPIC, announcements, members_frame
from fastapi_channels.wire.errors import BrokerError
from fastapi_channels.wire.history import History, recover, with_position

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from fastapi_channels.app.listeners import Subscription
    from fastapi_channels.app.registry import ChannelRoute
    from fastapi_channels.core.connection import SocketConnection

__all__ = ["CatchUp", "CaughtUp", "Held", "Reconnects", "push"]

logger = logging.getLogger("fastapi_channels.catchup")


@dataclass(frozen=True, slots=True)
class Held:
    """A frame held for a connection being caught up.

    Attributes:
        frame: the encoded packet.
        position: its position, for a stored message.
        filtered: whether it goes through the listener's outgoing filter (the listener's own
            events do; presence announcements do not).
    """

    frame: str
    position: Position | None = None
    filtered: bool = True


def push(connection: SocketConnection, subscription: Subscription, held: Held) -> None:
    """Send one frame of ``subscription``'s channel to one connection (through its filter)."""
    outgoing = subscription.route.outgoing
    if outgoing is None or not held.filtered:
        connection.push(held.frame)
    else:
        outgoing.fan_out((connection,), subscription, held.frame)


class CatchUp:
    """One presence or history route's live frames, held per connection being caught up."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[str, dict[SocketConnection, list[Held]]] = {}

    def hold(self, channel: str, connection: SocketConnection) -> None:
        """Hold ``channel``'s live frames for ``connection`` until `release`."""
        self._held.setdefault(channel, {})[connection] = []

    def holding(self, channel: str, connection: SocketConnection) -> bool:
        """Whether frames are held for ``connection`` on ``channel``."""
        return connection in self._held.get(channel, ())

    def release(self, channel: str, connection: SocketConnection) -> list[Held] | None:
        """Stop holding; return what was held (None if nothing was being held)."""
        waiting = self._held.get(channel)
        if waiting is None:
            return None
        held = waiting.pop(connection, None)
        if not waiting:
            del self._held[channel]
        return held

    def deliver(
        self,
        connections: Collection[SocketConnection],
        subscription: Subscription,
        held: Held,
    ) -> None:
        """Send a live frame to ``connections``, holding it for those being caught up."""
        waiting = self._held.get(subscription.channel)
        if waiting:
            live = []
            for connection in connections:
                kept = waiting.get(connection)
                if kept is None:
                    live.append(connection)
                else:
                    kept.append(held)
            connections = live
        if not connections:
            return
        outgoing = subscription.route.outgoing
        if outgoing is None or not held.filtered:
            for connection in connections:
                connection.push(held.frame)
        else:
            outgoing.fan_out(connections, subscription, held.frame)


@dataclass(slots=True)
class CaughtUp:
    """What a new subscriber gets: response fields now, then frames before live ones.

    Attributes:
        subscription: the new subscription.
        fields: added to the subscribe response (and reply): ``position``, ``recovered``.
        frames: sent after the response, in order (the member list, the missed messages).
        last: the last stored position sent (or the position the subscriber continues from):
            held stored messages up to it are skipped.
        skip: a held frame to drop: the subscriber's own join, which the member list it gets
            already shows.
    """

    subscription: Subscription
    fields: dict[str, Any] = field(default_factory=dict)
    frames: list[Held] = field(default_factory=list)
    last: Position | None = None
    skip: str | None = None

    def finish(self, connection: SocketConnection) -> None:
        """Send the frames, then the held live ones not already sent, and stop holding."""
        sub = self.subscription
        catch_up = sub.route.catch_up
        held = catch_up.release(sub.channel, connection) if catch_up is not None else None
        if held is None or connection.subscriptions.get(sub.channel) is not sub:
            return  # unsubscribed meanwhile
        last = self.last
        for item in self.frames:
            push(connection, sub, item)
        skip = self.skip
        for item in held:
            if skip is not None and item.frame == skip:
                skip = None
                continue
            position = item.position
            if position is not None:
                if _already_sent(position, last):
                    continue  # among the missed messages
                last = position
            push(connection, sub, item)


def _already_sent(position: Position, last: Position | None) -> bool:
    return last is not None and position.epoch == last.epoch and position.offset <= last.offset


class Reconnects:
    """Fills the gap a broker outage leaves in this process's history and presence channels.

    Args:
        broker: the process's broker.
        channels: the server's local subscribers by channel (read, never changed).
        topic: the broker topic of a channel name.
    """

    def __init__(
        self,
        broker: Broker,
        channels: Mapping[str, set[SocketConnection]],
        topic: str,
    ) -> None:
        self._broker = broker
        self._channels = channels
        self._topic = topic
        self._last: dict[str, Position] = {}
        self._runner: asyncio.Task[None] | None = None
        self.filled = asyncio.Event()
        """Set after each catch-up that follows a reconnect (for tests and monitoring)."""

    def saw(self, channel: str, position: Position) -> None:
        """Record a stored message this process delivered (the fan-out path: one dict write)."""
        self._last[channel] = position

    def note(self, channel: str, position: Position) -> None:
        """Record a channel's position read when subscribing, unless a newer one is known."""
        self._last.setdefault(channel, position)

    def forget(self, channel: str) -> None:
        """The process has no subscriber left in ``channel``."""
        self._last.pop(channel, None)

    def start(self) -> None:
        """Watch the broker: after every reconnection, catch the history channels up."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._watch(), name="fastapi_channels.reconnects")

    async def stop(self) -> None:
        """Stop watching."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.wait({runner})

    async def _watch(self) -> None:
        broker = self._broker
        while True:
            await broker.wait_for_state(BrokerState.RECONNECTING)
            await broker.wait_for_state(BrokerState.CONNECTED, BrokerState.STOPPED)
            if broker.state is BrokerState.STOPPED:
                return
            try:
                await self.fill()
            except Exception:
                logger.exception("catching up after a reconnect failed")
            self.filled.set()
            self.filled = asyncio.Event()

    async def fill(self) -> None:
        """Catch every local presence and history channel up, all at once.

        A presence channel's subscribers get the member list again; a history channel's get
        what this process missed there. The broker bounds how many reads run at once.
        """
        await asyncio.gather(*(self._catch_up(channel) for channel in list(self._channels)))
        for channel in [c for c in self._last if c not in self._channels]:
            self.forget(channel)

    async def _catch_up(self, channel: str) -> None:
        """Hold the channel's subscribers, read what they need, send it, then the held frames."""
        subscribers = self._channels.get(channel)
        first = next(iter(subscribers)).subscriptions.get(channel) if subscribers else None
        route: ChannelRoute | None = first.route if first is not None else None
        catch_up = route.catch_up if route is not None else None
        if subscribers is None or route is None or catch_up is None:
            return
        waiting = [c for c in subscribers if not catch_up.holding(channel, c)]
        for connection in waiting:
            catch_up.hold(channel, connection)
        frames: list[Held] = []
        last = self._last.get(channel)
        try:
            if route.presence:
                frames += await self._members(channel)
            if route.history is not None and last is not None:
                frames += await self._missed(channel, route.history, last)
        finally:
            for connection in waiting:
                sub = connection.subscriptions.get(channel)
                if sub is not None:  # else it unsubscribed meanwhile, which stopped the holding
                    CaughtUp(sub, frames=list(frames), last=last).finish(connection)

    async def _members(self, channel: str) -> list[Held]:
        try:
            members = await self._broker.presence_members(
                PRESENCE_TOPIC + channel, announcements(channel)
            )
        except BrokerError as exc:
            logger.warning("could not read the members of %r after a reconnect: %s", channel, exc)
            return []
        return [Held(members_frame(channel, members), filtered=False)]

    async def _missed(self, channel: str, history: History, last: Position) -> list[Held]:
        try:
            stored = await self._broker.read_stored(
                self._topic + channel, history.retention, last.offset
            )
        except BrokerError as exc:
            logger.warning("could not read the history of %r after a reconnect: %s", channel, exc)
            return []
        _, missed, recovered = recover(stored, last)
        if not recovered:
            logger.warning("%r: messages missed during the outage are no longer kept", channel)
        frames, end = [], last
        for entry in missed:
            end = Position(entry.offset, stored.epoch)
            frames.append(Held(with_position(entry.data.decode(), end), end))
        if self._last.get(channel) == last:  # no live message arrived during the read
            self._last[channel] = end
        return frames
