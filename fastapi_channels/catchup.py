"""Catching a new subscriber up: what it gets before live frames, and holding those meanwhile.

Subscribing to a presence or history channel takes a few reads from the broker (the member
list, the missed messages). Live frames for the channel may arrive during those reads: they
are held for that connection only (:class:`CatchUp`), then sent after the subscribe response,
the member list and the missed messages, skipping stored messages the connection already got
(same epoch, offset not above the last one sent). So a client sees, in order and once: the
response, ``channels:presence``, the missed messages, then live ones.

Only routes with presence or history have a :class:`CatchUp`; other channels keep the plain
fan-out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi_channels.brokers.base import Position

if TYPE_CHECKING:
    from collections.abc import Collection

    from fastapi_channels.connection import SocketConnection
    from fastapi_channels.listeners import Subscription

__all__ = ["CatchUp", "CaughtUp", "push"]


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
        """Hold ``channel``'s live frames for ``connection`` until :meth:`release`."""
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
