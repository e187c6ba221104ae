"""Packets as the client sees them, and the bounded streams ``async for`` reads them from."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from fastapi_channels.wire.history import Position

__all__ = ["Packet", "PacketStream", "parse_packet", "parse_position"]

logger = logging.getLogger("fastapi_channels.client")


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet from the server (or one of the client's own ``channels:`` events).

    Attributes:
        event: the event name.
        data: the payload (``None`` when absent).
        channel: the channel, for a channel event.
        id: the request id, on a reply.
        error: the error object, on a reply that failed.
        position: where the event stands in its channel's history, on a history channel.
    """

    event: str
    data: Any = None
    channel: str | None = None
    id: Any = None
    error: Any = None
    position: Position | None = None


def parse_position(value: Any) -> Position | None:
    """A wire position ``{"offset": int, "epoch": str}`` as a `Position`, else None."""
    if not isinstance(value, dict):
        return None
    offset, epoch = value.get("offset"), value.get("epoch")
    if isinstance(offset, int) and not isinstance(offset, bool) and isinstance(epoch, str):
        return Position(offset, epoch)
    return None


def parse_packet(text: str | bytes) -> Packet | None:
    """Decode one frame; ``None`` (logged) for anything that is not a packet."""
    if isinstance(text, bytes):
        logger.warning("ignoring a binary frame of %d bytes", len(text))
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        logger.warning("ignoring a frame that is not JSON: %.80r", text)
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("event"), str):
        logger.warning("ignoring a frame that is not a packet: %.80r", text)
        return None
    channel = raw.get("channel")
    return Packet(
        event=raw["event"],
        data=raw.get("data"),
        channel=channel if isinstance(channel, str) else None,
        id=raw.get("id"),
        error=raw.get("error"),
        position=parse_position(raw.get("position")),
    )


class PacketStream:
    """Packets matching a filter, buffered from the moment the stream is created.

    Iterate with ``async for``, or call `get`. The buffer is bounded: when ``maxsize``
    packets wait unread, the oldest is dropped (and counted in `dropped`), so a reader
    that falls behind loses old packets instead of growing memory. Iteration ends when the
    stream is closed: by `close`, by leaving ``async with``, or when the client stops for
    good. A reconnect does not end it.
    """

    def __init__(
        self,
        event: str | None = None,
        channel: str | None = None,
        maxsize: int = 1000,
        on_close: Callable[[PacketStream], None] | None = None,
    ) -> None:
        self.event = event
        self.channel = channel
        self.maxsize = maxsize
        self.dropped = 0
        self._buffer: deque[Packet] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._on_close = on_close

    def matches(self, packet: Packet) -> bool:
        """Whether ``packet`` passes this stream's filter."""
        return (self.event is None or packet.event == self.event) and (
            self.channel is None or packet.channel == self.channel
        )

    def put(self, packet: Packet) -> None:
        """Buffer ``packet`` without waiting; drops the oldest when full."""
        if self._closed:
            return
        if len(self._buffer) >= self.maxsize:
            self._buffer.popleft()
            self.dropped += 1
            if self.dropped == 1:
                logger.warning("a packet stream is full: dropping its oldest packets")
        self._buffer.append(packet)
        self._wake()

    async def get(self, timeout: float | None = None) -> Packet:
        """The next packet.

        Raises:
            TimeoutError: none arrived within ``timeout`` seconds.
            StopAsyncIteration: the stream is closed and empty.
        """
        async with asyncio.timeout(timeout):
            while not self._buffer:
                if self._closed:
                    raise StopAsyncIteration
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        return self._buffer.popleft()

    def close(self) -> None:
        """End the stream; packets already buffered can still be read."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._on_close is not None:
            self._on_close(self)

    def __aiter__(self) -> PacketStream:
        return self

    async def __anext__(self) -> Packet:
        return await self.get()

    async def __aenter__(self) -> PacketStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
