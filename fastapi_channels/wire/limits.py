"""Per-connection limits and the outgoing queue's policy, with their defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from fastapi_channels.wire.errors import ConfigurationError

__all__ = ["Limits", "OverflowPolicy"]


class OverflowPolicy(StrEnum):
    """What happens when a frame arrives for a connection whose outgoing queue is full."""

    DROP_OLDEST = "drop-oldest"
    """Discard the oldest queued frame to make room: the client misses old messages."""
    DROP_NEWEST = "drop-newest"
    """Discard the new frame: the client misses new messages."""
    DISCONNECT = "disconnect"
    """Discard the queue, send ``disconnect`` (reason ``too slow``) and close with 1013."""


_COUNTS: Final = (
    "max_message_size",
    "max_name_length",
    "max_subscriptions",
    "queue_size",
    "burst",
    "rate_strikes",
)
"""Integers of at least 1."""
_OPTIONAL_COUNTS: Final = ("max_connections", "max_connections_per_user")
"""Integers of at least 1, or None for no limit."""
_TIMEOUTS: Final = ("close_timeout", "handshake_timeout")
"""Seconds above 0."""
_SPANS: Final = ("shutdown_timeout", "reconnect_spread")
"""Seconds, 0 or more: 0 gives in-flight handlers no time, or sends no reconnection hint."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """An int or a finite float, not a bool."""
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_int(value)


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits applied to every connection.

    Attributes:
        max_message_size: the largest inbound text frame in bytes; a larger one closes the
            connection with 1009 (64 KiB, as Centrifugo). Checked once the ASGI server has
            assembled the message: set the server's limit to match (``uvicorn --ws-max-size``);
            a uvicorn that accepts more is reported once in the log.
        max_name_length: the longest event or channel name accepted from a client.
        max_subscriptions: how many channels one connection may subscribe to; more are
            answered ``successful: false``.
        queue_size: how many frames may wait in one connection's outgoing queue.
        overflow: what happens when that queue is full: an `OverflowPolicy`, or its value
            (``"drop-oldest"``, as read from a configuration file), which is converted.
        handler_timeout: seconds a handler, ``is_authorised`` or middleware hook may run for
            one packet before it is cancelled and answered with an error; None for no limit.
        close_timeout: seconds to wait for a peer to take the close frame before dropping it.
        handshake_timeout: seconds the handshake (the user dependency and ``connect``
            middleware) may take; a slower one is refused with ``handshake timed out``.
        rate: packets per second a connection may send on average (a token bucket); None for
            no limit. A packet over the limit is dropped and answered ``rate-limited``. Under
            uvicorn's default websocket implementation protocol-level pings take a token too
            (one over the limit gets no pong).
        burst: how many packets a connection may send at once above ``rate``.
        rate_strikes: how many packets in a row may be dropped for the rate before the
            connection is closed with 1008.
        max_connections: connections this process accepts; more are refused (``server busy``,
            close 1013). None for no limit.
        max_connections_per_user: connections one user may hold on this process; more are
            refused (``too many connections``, close 1008). None for no limit.
        shutdown_timeout: seconds in-flight handlers get to finish when the server stops,
            before every connection is closed with 1012.
        reconnect_spread: the upper bound, in seconds, of the random ``reconnect_after`` hint
            sent with the shutdown ``disconnect``, so clients do not all reconnect at once;
            0 sends no hint.
        max_backlog_age: seconds a broadcast's frames may wait in this process (in the
            fan-out, the connections' queues and, with direct writes, the transports' write
            buffers) before publishers of this process wait: once most recently probed
            recipients still hold frames that old, ``broadcast`` (and the HTTP API's publish)
            waits until they have caught up. It bounds the server's backlog in time when
            subscribers read slower than a publisher sends; a single slow recipient does not
            trigger it (its queue and ``overflow`` deal with it). None for no bound in time.
        direct_writes: under uvicorn's default websocket implementation, write each frame
            straight to the socket (a broadcast framed once for all its recipients) where no
            ASGI middleware wraps ``send``; frames that cannot be written at once, and frames
            over 1 KiB to a client that negotiated ``permessage-deflate`` (they are compressed),
            still go through ASGI ``send``. False sends every frame through ``send``.

    Raises:
        ConfigurationError: a value has the wrong type or is out of range; the message names
            the field and what it accepts. Counts are integers of at least 1 (a bool is not
            one); durations and ``rate`` are finite numbers, above 0 except for
            ``shutdown_timeout`` and ``reconnect_spread`` (0 or more); ``direct_writes`` is a
            bool.
    """

    max_message_size: int = 64 * 1024
    max_name_length: int = 200
    max_subscriptions: int = 100
    queue_size: int = 1000
    overflow: OverflowPolicy = OverflowPolicy.DISCONNECT
    handler_timeout: float | None = 30.0
    close_timeout: float = 5.0
    handshake_timeout: float = 10.0
    rate: float | None = 50.0
    burst: int = 100
    rate_strikes: int = 20
    max_connections: int | None = 10_000
    max_connections_per_user: int | None = 32
    shutdown_timeout: float = 10.0
    reconnect_spread: float = 10.0
    max_backlog_age: float | None = 0.02
    direct_writes: bool = True

    def __post_init__(self) -> None:
        for name in _COUNTS:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise _refuse(name, value, "an integer of at least 1")
        for name in _OPTIONAL_COUNTS:
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise _refuse(name, value, "an integer of at least 1, or None")
        for name in _TIMEOUTS:
            value = getattr(self, name)
            if not _is_number(value) or not value > 0:
                raise _refuse(name, value, "a finite number of seconds above 0")
        for name in _SPANS:
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise _refuse(name, value, "a finite number of seconds, 0 or more")
        timeout = self.handler_timeout
        if timeout is not None and (not _is_number(timeout) or not timeout > 0):
            raise _refuse("handler_timeout", timeout, "a finite number of seconds above 0, or None")
        age = self.max_backlog_age
        if age is not None and (not _is_number(age) or not age > 0):
            raise _refuse("max_backlog_age", age, "a finite number of seconds above 0, or None")
        rate = self.rate
        if rate is not None and (not _is_number(rate) or not rate > 0):
            raise _refuse("rate", rate, "a finite number of packets per second above 0, or None")
        if not isinstance(self.direct_writes, bool):
            raise _refuse("direct_writes", self.direct_writes, "True or False")
        if not isinstance(self.overflow, OverflowPolicy):
            try:
                policy = OverflowPolicy(self.overflow)
            except (ValueError, TypeError):
                values = ", ".join(repr(p.value) for p in OverflowPolicy)
                accepted = f"an OverflowPolicy or one of {values}"
                raise _refuse("overflow", self.overflow, accepted) from None
            object.__setattr__(self, "overflow", policy)


def _refuse(name: str, value: object, accepted: str) -> ConfigurationError:
    return ConfigurationError(f"Limits.{name} must be {accepted}, not {value!r}")
