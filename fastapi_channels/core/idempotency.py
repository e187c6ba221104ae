"""The idempotency key of the packet being handled, for the broadcasts its handler makes.

A client packet may carry a ``key``. The dispatcher sets `current_key` while the packet's
handler runs; `SocketServer.broadcast` takes a key from it when none is given explicitly. The
n-th broadcast of one handler run uses ``key`` for the first and ``key#n`` after it, so a handler
that broadcasts several messages for one packet has each delivered once, as long as a retry
makes the same broadcasts in the same order.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["PacketKey", "current_key", "next_key"]


@dataclass(slots=True)
class PacketKey:
    """The key of the packet being handled, and how many broadcasts used it so far."""

    key: str
    used: int = 0

    def next(self) -> str:
        """The key of the next broadcast: the packet's key, then ``key#2``, ``key#3``, ..."""
        self.used += 1
        return self.key if self.used == 1 else f"{self.key}#{self.used}"


current_key: ContextVar[PacketKey | None] = ContextVar("fastapi_channels_key", default=None)
"""Set by the dispatcher while the handler of a packet with a ``key`` runs."""


def next_key() -> str | None:
    """The key for a broadcast made now: from the packet being handled, else None."""
    packet = current_key.get()
    return packet.next() if packet is not None else None
