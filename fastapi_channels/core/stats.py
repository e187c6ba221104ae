"""Plain counters of one server, cheap enough for the per-message path.

Every figure is a Python int or float bumped in place; nothing is locked or allocated per
message. Exporters (``fastapi_channels.prometheus``, the info route) read them when asked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["HANDLER_BUCKETS", "Stats"]

HANDLER_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)
"""Upper bounds (seconds) of the handler-duration histogram buckets."""


@dataclass(slots=True)
class Stats:
    """Counters since the server started.

    Attributes:
        connections_opened: connections accepted.
        connections_refused: handshakes refused (by reason in ``refusals``).
        messages_in: frames received from clients.
        bytes_in: their size (characters of text frames, bytes of binary ones).
        messages_out: frames queued for clients (a broadcast to N counts N).
        bytes_out: their size in characters.
        dropped: frames discarded by the overflow policy.
        errors: error packets sent, by code.
        refusals: refused handshakes, by reason.
        closes: connections closed by the server, by close code.
        handler_count: handler calls timed.
        handler_seconds: their total duration.
        handler_buckets: cumulative counts per ``HANDLER_BUCKETS`` bound.
    """

    connections_opened: int = 0
    connections_refused: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    dropped: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    handler_count: int = 0
    handler_seconds: float = 0.0
    handler_buckets: list[int] = field(default_factory=lambda: [0] * len(HANDLER_BUCKETS))

    def observe_handler(self, seconds: float) -> None:
        """Record one handler call's duration."""
        self.handler_count += 1
        self.handler_seconds += seconds
        buckets = self.handler_buckets
        for index, bound in enumerate(HANDLER_BUCKETS):
            if seconds <= bound:
                buckets[index] += 1

    def as_dict(self) -> dict[str, object]:
        """The counters as JSON-ready values."""
        return {
            "connections_opened": self.connections_opened,
            "connections_refused": self.connections_refused,
            "messages_in": self.messages_in,
            "bytes_in": self.bytes_in,
            "messages_out": self.messages_out,
            "bytes_out": self.bytes_out,
            "dropped": self.dropped,
            "errors": dict(self.errors),
            "refusals": dict(self.refusals),
            "closes": {str(code): count for code, count in self.closes.items()},
            "handler_count": self.handler_count,
            "handler_seconds": round(self.handler_seconds, 6),
        }
