"""Per-connection limits and the outgoing queue's policy, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi_channels.core.connection import OverflowPolicy

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
        handshake_timeout: seconds the handshake (the user dependency and ``connect``
            middleware) may take; a slower one is refused with ``handshake timed out``.
        rate: packets per second a connection may send on average (a token bucket); None for
            no limit. A packet over the limit is dropped and answered ``rate-limited``.
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
            sent with the shutdown ``disconnect``, so clients do not all reconnect at once.
        direct_writes: under uvicorn's default websocket implementation, write each frame
            straight to the socket (a broadcast framed once for all its recipients) where no
            ASGI middleware wraps ``send``; frames that cannot be written at once, and frames
            over 1 KiB to a client that negotiated ``permessage-deflate`` (they are compressed),
            still go through ASGI ``send``. False sends every frame through ``send``.
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
    direct_writes: bool = True
