"""Per-connection limits and the outgoing queue's policy, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi_channels.connection import OverflowPolicy

__all__ = ["Limits"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits applied to every connection.

    Attributes:
        max_message_size: the largest inbound text frame in bytes; a larger one closes the
            connection with 1009 (64 KiB, as Centrifugo).
        max_name_length: the longest event or channel name accepted from a client.
        max_subscriptions: how many channels one connection may subscribe to; more are
            answered ``successful: false``.
        queue_size: how many frames may wait in one connection's outgoing queue.
        overflow: what happens when that queue is full.
        handler_timeout: seconds a handler, ``is_authorised`` or middleware hook may run for
            one packet before it is cancelled and answered with an error; None for no limit.
        close_timeout: seconds to wait for a peer to take the close frame before dropping it.
    """

    max_message_size: int = 64 * 1024
    max_name_length: int = 200
    max_subscriptions: int = 100
    queue_size: int = 1000
    overflow: OverflowPolicy = OverflowPolicy.DISCONNECT
    handler_timeout: float | None = 30.0
    close_timeout: float = 5.0
