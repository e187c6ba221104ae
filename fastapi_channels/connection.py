"""One client connection: its subscriptions, its bounded outgoing queue and its writer.

Sending never waits on the socket: frames are appended to a bounded queue that one writer task
per connection drains. When the queue is full, the connection's :class:`OverflowPolicy` decides.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, MutableMapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from fastapi_channels.errors import CloseCode, ConnectionClosed
from fastapi_channels.protocol import DISCONNECT, encode
from fastapi_channels.stats import Stats

if TYPE_CHECKING:
    from fastapi_channels.listeners import Subscription

__all__ = ["OverflowPolicy", "SocketConnection", "Transport"]

logger = logging.getLogger("fastapi_channels.connection")


class Transport(Protocol):
    """What a connection needs from the socket underneath."""

    async def send_text(self, text: str) -> None:
        """Send one text frame; may block while the peer does not read."""

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame."""


class OverflowPolicy(StrEnum):
    """What happens when a frame arrives for a connection whose outgoing queue is full."""

    DROP_OLDEST = "drop-oldest"
    """Discard the oldest queued frame to make room: the client misses old messages."""
    DROP_NEWEST = "drop-newest"
    """Discard the new frame: the client misses new messages."""
    DISCONNECT = "disconnect"
    """Discard the queue, send ``disconnect`` (reason ``too slow``) and close with 1013."""


class SocketConnection:
    """A connected client.

    Attributes:
        id: a unique id (hex), also sent to the client in ``ready``.
        user: what the ``Channels`` user dependency returned; ``None`` when anonymous.
        user_key: the key used to reach this connection by user id; ``None`` when anonymous.
        scope: the ASGI scope of the handshake (headers, client address, path).
        subscriptions: the connection's subscriptions by concrete channel name.

    Memory: a connection holds its slots, one small object per subscription and its queued
    frames (shared ``str`` objects: a broadcast's frame is one object for all recipients).
    """

    __slots__ = (
        "__weakref__",
        "_close_timeout",
        "_closed",
        "_closing",
        "_deadline",
        "_max_queue",
        "_on_abandon",
        "_policy",
        "_queue",
        "_stats",
        "_transport",
        "_waiter",
        "_writer",
        "id",
        "scope",
        "subscriptions",
        "user",
        "user_key",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        id: str,
        user: Any = None,
        user_key: str | None = None,
        scope: MutableMapping[str, Any] | None = None,
        max_queue: int = 1000,
        overflow: OverflowPolicy = OverflowPolicy.DISCONNECT,
        stats: Stats | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        self.id = id
        self.user = user
        self.user_key = user_key
        self.scope: MutableMapping[str, Any] = scope if scope is not None else {}
        self.subscriptions: dict[str, Subscription] = {}
        self._transport = transport
        self._queue: deque[str] = deque()
        self._max_queue = max_queue
        self._policy = overflow
        self._waiter: asyncio.Future[None] | None = None
        self._closing: tuple[int, str] | None = None
        self._close_timeout = close_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._on_abandon: Callable[[SocketConnection], None] | None = None
        self._closed = False
        self._writer: asyncio.Task[None] | None = None
        self._stats = stats if stats is not None else Stats()

    def __repr__(self) -> str:
        return f"<SocketConnection {self.id} user={self.user_key!r}>"

    @property
    def is_open(self) -> bool:
        """Whether frames can still be queued (not closing nor closed)."""
        return self._closing is None and not self._closed

    @property
    def queued(self) -> int:
        """How many frames wait in the outgoing queue."""
        return len(self._queue)

    def has_subscription(self, channel: str) -> bool:
        """Whether the connection is subscribed to the concrete ``channel``."""
        return channel in self.subscriptions

    def start(self) -> None:
        """Start the writer task; frames pushed before are sent first, in order."""
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(), name=f"fastapi_channels writer {self.id}"
            )

    def push(self, frame: str) -> bool:
        """Queue one encoded frame without waiting; returns whether it was queued.

        This is the fan-out path: it never blocks and never raises. A closing or closed
        connection ignores the frame; a full queue applies the overflow policy.
        """
        if self._closing is not None or self._closed:
            return False
        queue = self._queue
        stats = self._stats
        if len(queue) >= self._max_queue:
            stats.dropped += 1
            if self._policy is OverflowPolicy.DROP_NEWEST:
                return False
            if self._policy is OverflowPolicy.DISCONNECT:
                logger.warning("connection %s: outgoing queue full, disconnecting", self.id)
                stats.dropped += len(queue)
                queue.clear()
                self.close_soon(CloseCode.TRY_AGAIN_LATER, "too slow")
                return False
            queue.popleft()
        queue.append(frame)
        stats.messages_out += 1
        stats.bytes_out += len(frame)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    async def send(self, event: str, data: Any = None) -> None:
        """Queue a plain event for this connection; returns once it is queued, not sent.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        if not self.is_open:
            raise ConnectionClosed(f"connection {self.id} is closed")
        self.push(encode(event, data).decode())

    async def send_to_channel(self, channel: str, event: str, data: Any = None) -> bool:
        """Queue a channel event for this connection only.

        Returns False, sending nothing, when the connection is not subscribed to ``channel``:
        a client is never sent an event for a channel it has not subscribed to.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        if not self.is_open:
            raise ConnectionClosed(f"connection {self.id} is closed")
        if channel not in self.subscriptions:
            return False
        return self.push(encode(event, data, channel).decode())

    async def disconnect(self, reason: str = "disconnected", code: int = CloseCode.NORMAL) -> None:
        """Send a ``disconnect`` packet with ``reason`` after what is queued, then close.

        Returns once the close frame was sent, or at most after 5 s if the peer does not read
        (the writer is then cancelled). Calling it on a closing connection only waits.
        """
        self.close_soon(code, reason)
        await self.wait_closed(timeout=5.0)

    async def wait_closed(self, timeout: float) -> None:
        """Wait for the writer to finish; cancel it when ``timeout`` passes first."""
        writer = self._writer
        if writer is None or writer is asyncio.current_task():
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(writer)
        except TimeoutError:
            logger.warning("connection %s: peer did not take the close, dropping it", self.id)
            writer.cancel()
        except Exception:  # the writer logged it already
            pass

    def close_soon(self, code: int, reason: str, reconnect_after: float | None = None) -> None:
        """Queue ``disconnect`` (after what is queued) and the close, without waiting.

        ``reconnect_after`` (seconds) is added to the packet as a hint for clients that
        reconnect. Calling it on a closing or closed connection does nothing.
        """
        if not self.is_open:
            return
        data: dict[str, Any] = {"reason": reason}
        if reconnect_after is not None:
            data["reconnect_after"] = round(reconnect_after, 3)
        self._queue.append(encode(DISCONNECT, data).decode())
        self._closing = (code, reason)
        self._stats.closes[code] += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        writer = self._writer
        if writer is None:
            self._closed = True
        elif not writer.done():
            self._deadline = asyncio.get_running_loop().call_later(
                self._close_timeout, self._abandon
            )

    def _abandon(self) -> None:
        """The peer has not taken the close in time: stop writing and forget the connection."""
        self._deadline = None
        writer = self._writer
        if writer is not None and not writer.done():
            logger.warning("connection %s: peer does not read, dropping it", self.id)
            writer.cancel()
        self.mark_closed()
        if self._on_abandon is not None:
            self._on_abandon(self)

    def mark_closed(self) -> None:
        """Record that the peer went away: stop queuing and wake the writer so it exits."""
        self._closed = True
        self._queue.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _write_loop(self) -> None:
        queue = self._queue
        send = self._transport.send_text
        loop = asyncio.get_running_loop()
        try:
            while not self._closed:
                while queue:
                    await send(queue.popleft())
                if self._closing is not None:
                    code, reason = self._closing
                    await self._transport.close(code, reason)
                    break
                if self._closed:
                    break
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer is gone; the reader notices and cleans up
            logger.debug("connection %s: send failed: %r", self.id, exc)
        finally:
            self._closed = True
            queue.clear()
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
