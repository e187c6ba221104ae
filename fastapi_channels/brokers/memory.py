"""The in-memory broker: one process, no I/O, the default."""

from __future__ import annotations

from fastapi_channels.brokers.base import Broker

__all__ = ["MemoryBroker"]


class MemoryBroker(Broker):
    """Delivers within this process, synchronously, in publish order.

    ``publish`` hands the bytes to the server's fan-out before it returns, so it never waits on
    a slow consumer: the fan-out only appends to bounded per-connection queues. It is
    ``connected`` from `start` to `stop`.
    """

    name = "memory"

    async def publish(self, topic: str, data: bytes) -> None:
        """Deliver ``data`` to this process's subscribers of ``topic``, if any."""
        self._deliver(topic, data)

    async def _subscribe(self, topic: str) -> None:
        return None

    async def _unsubscribe(self, topic: str) -> None:
        return None
