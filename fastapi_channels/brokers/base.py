"""The broker interface: bytes between processes, by topic.

A broker knows topics and bytes, never connections, packets or users. The server encodes each
message once, publishes the bytes, and fans out whatever the broker delivers to its local
connections. Interest in a topic is reference-counted here, so a concrete broker sees one
``_subscribe`` when the first local subscriber arrives and one ``_unsubscribe`` when the last
one leaves.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable

__all__ = ["Broker", "MessageHandler"]

MessageHandler = Callable[[str, bytes], None]
"""Called with ``(topic, data)`` for every message on a subscribed topic, in publish order per
publisher. It runs on the event loop and must not block."""


class Broker(ABC):
    """Base class of every broker.

    Subclasses implement :meth:`publish`, :meth:`_subscribe` and :meth:`_unsubscribe`, and may
    override :meth:`start`, :meth:`stop` and :attr:`healthy`.
    """

    def __init__(self) -> None:
        self._handler: MessageHandler | None = None
        self._interest: dict[str, int] = {}
        self._pending: dict[str, asyncio.Future[None]] = {}

    @property
    def topics(self) -> frozenset[str]:
        """The topics this process currently has local interest in."""
        return frozenset(self._interest)

    @property
    def healthy(self) -> bool:
        """Whether the broker can currently deliver between processes."""
        return True

    def _deliver(self, topic: str, data: bytes) -> None:
        """Hand one received message to the server, if this process still wants the topic."""
        if self._handler is not None and topic in self._interest:
            self._handler(topic, data)

    async def start(self, handler: MessageHandler) -> None:
        """Start delivering messages on subscribed topics to ``handler``."""
        self._handler = handler

    async def stop(self) -> None:
        """Stop delivering and release every resource; interest is forgotten."""
        self._handler = None
        self._interest.clear()

    async def subscribe(self, topic: str) -> None:
        """Add one unit of interest in ``topic``.

        Returns once messages published to ``topic`` from now on will be delivered, so a caller
        may tell a client it is subscribed. Concurrent callers for a new topic share one
        underlying subscription and all wait for it.

        Raises:
            BrokerError: the subscription could not be made; the interest is not kept.
        """
        count = self._interest.get(topic, 0) + 1
        self._interest[topic] = count
        if count > 1:
            pending = self._pending.get(topic)
            if pending is not None:
                await asyncio.shield(pending)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[topic] = future
        try:
            await self._subscribe(topic)
        except BaseException as exc:
            self._release(topic)
            future.set_exception(exc)
            future.exception()  # mark retrieved: the raise below reports it
            raise
        else:
            future.set_result(None)
        finally:
            self._pending.pop(topic, None)

    async def unsubscribe(self, topic: str) -> None:
        """Remove one unit of interest in ``topic``; the last one unsubscribes for real."""
        if self._release(topic):
            await self._unsubscribe(topic)

    def _release(self, topic: str) -> bool:
        count = self._interest.get(topic, 0) - 1
        if count > 0:
            self._interest[topic] = count
            return False
        self._interest.pop(topic, None)
        return count == 0

    @abstractmethod
    async def publish(self, topic: str, data: bytes) -> None:
        """Send ``data`` to every process interested in ``topic``, this one included.

        Messages published by one process to one topic arrive in publish order.

        Raises:
            BrokerError: the message could not be handed to the transport.
        """

    @abstractmethod
    async def _subscribe(self, topic: str) -> None:
        """Start receiving ``topic`` (called once, when interest goes from zero to one)."""

    @abstractmethod
    async def _unsubscribe(self, topic: str) -> None:
        """Stop receiving ``topic`` (called once, when interest drops to zero)."""
