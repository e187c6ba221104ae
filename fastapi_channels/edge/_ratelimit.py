"""The inbound rate limit of one connection: a token bucket shared by packets and pings."""

from __future__ import annotations

import time
from enum import IntEnum

__all__ = ["RateLimit", "Verdict"]


class Verdict(IntEnum):
    """What the rate limit says of one inbound frame."""

    ALLOWED = 0
    """Within the rate: handle it."""
    DROPPED = 1
    """Over the rate: drop it (a packet is answered ``rate-limited``; a ping gets no pong)."""
    EXCEEDED = 2
    """Over the rate ``strikes`` times in a row: close the connection with 1008."""


class RateLimit:
    """``rate`` frames a second on average, up to ``burst`` at once, for one connection.

    Every frame the client sends takes a token: text and binary packets (``pong`` events
    included), and, under uvicorn's default websocket implementation, protocol-level pings. A
    frame finding no token is dropped; ``strikes`` drops in a row mean the client ignores the
    answers, and the connection is closed. Constant time and memory per frame (four numbers).
    """

    __slots__ = ("_burst", "_last", "_rate", "_strikes", "_tokens", "_top")

    def __init__(self, rate: float, burst: int, strikes: int) -> None:
        self._rate = rate
        self._burst = self._tokens = float(burst)
        self._last = time.monotonic()
        self._top = strikes
        self._strikes = 0

    def admit(self) -> Verdict:
        """Take a token for one frame, and say what to do with it."""
        now = time.monotonic()
        tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            self._strikes += 1
            return Verdict.EXCEEDED if self._strikes >= self._top else Verdict.DROPPED
        self._tokens = tokens - 1.0
        self._strikes = 0
        return Verdict.ALLOWED
