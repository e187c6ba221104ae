"""Outgoing filters: a channel listener's hook that sees each broadcast once per recipient.

A listener declares at most one method with ``@channel.outgoing(...)``. When a broadcast (or a
``send_to_user_via_channel``) of one of its events reaches this process, the frame is decoded
once and the hook is called for each local recipient; it returns the data unchanged (the shared
frame is queued), other data (encoded for that recipient only) or `DROP` (nothing is
sent to that recipient). A listener without a hook keeps the encode-once fan-out: one frame
object shared by every recipient, no decoding.

The hook runs synchronously on the fan-out path, inside the broker's delivery callback. That
keeps delivery ordered and non-blocking: no task per recipient, no awaiting. The price is that
the hook cannot await anything (a database lookup, say); it decides from the connection, its
user and the data, so anything it needs must already be in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, final

from pydantic_core import from_json

from fastapi_channels.core.channel import current_subscription
from fastapi_channels.wire.history import Position, with_position
from fastapi_channels.wire.protocol import encode

if TYPE_CHECKING:
    from fastapi_channels.core.channel import Subscription
    from fastapi_channels.core.connection import SocketConnection

__all__ = ["DROP", "OutgoingFilter", "send"]

logger = logging.getLogger("fastapi_channels.outgoing")


@final
class _Drop:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DROP"


DROP: Final = _Drop()
"""Return it from an outgoing filter to send nothing to that recipient."""

Hook = Callable[["SocketConnection", str, Any], Any]


class OutgoingFilter:
    """A started listener's outgoing hook and the events it sees (``None``: all of them)."""

    __slots__ = ("events", "hook")

    def __init__(self, hook: Hook, events: frozenset[str] | None) -> None:
        self.hook = hook
        self.events = events

    def fan_out(
        self, connections: Iterable[SocketConnection], subscription: Subscription, frame: str
    ) -> None:
        """Queue ``frame`` (a channel event of ``subscription``'s channel) for each connection.

        Decodes the frame once. Events the hook does not see are queued unchanged. For the
        others the hook decides per recipient; a recipient whose data changed gets its own
        encoding, the others share ``frame``. A hook that raises, or returns data that cannot
        be serialised, drops the event for that recipient (it usually hides something, so it
        fails closed); the failures are logged once per broadcast. Never raises.
        """
        try:
            packet = from_json(frame)
            event, data = packet["event"], packet.get("data")
            position = packet.get("position")
            at = Position(position["offset"], position["epoch"]) if position else None
        except (ValueError, KeyError, TypeError):
            logger.error("dropping an undecodable frame on %s", subscription.channel)
            return
        if self.events is not None and event not in self.events:
            for connection in connections:
                connection.push(frame)
            return
        hook, channel = self.hook, subscription.channel
        failures = 0
        token = current_subscription.set(subscription)
        try:
            for connection in connections:
                try:
                    result = hook(connection, event, data)
                    if result is DROP:
                        continue
                    if result is data:
                        connection.push(frame)
                    elif at is None:
                        connection.push(encode(event, result, channel).decode())
                    else:  # a history channel's event keeps its position
                        connection.push(with_position(encode(event, result, channel).decode(), at))
                except Exception:
                    failures += 1
                    if failures == 1:
                        logger.exception(
                            "outgoing filter failed for %r on %s; dropped for that recipient",
                            event,
                            channel,
                        )
        finally:
            current_subscription.reset(token)
        if failures > 1:
            logger.error("outgoing filter failed for %d recipients of %r", failures, event)


def send(
    connections: Iterable[SocketConnection],
    subscription: Subscription,
    frame: str,
    filtered: bool = True,
) -> None:
    """Hand a frame of ``subscription``'s channel to ``connections``: the one last step.

    Through the channel's outgoing filter when it has one and ``filtered`` is true (the
    listener's own events; presence announcements are not filtered), else the shared frame is
    pushed to each connection unchanged. Never raises, never awaits.
    """
    outgoing = subscription.spec.outgoing
    if outgoing is None or not filtered:
        for connection in connections:
            connection.push(frame)
    else:
        outgoing.fan_out(connections, subscription, frame)
