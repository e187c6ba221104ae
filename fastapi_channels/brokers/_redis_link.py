"""One subscriber connection to one Redis server: subscriptions, their confirmations, the watchdog.

The Redis broker keeps one link (to its server, or the master Sentinel names); the Redis Cluster
broker one per shard master, each carrying the topics whose slots that master serves. A link
speaks plain pub/sub (``SUBSCRIBE``, ``message``) or sharded pub/sub (``SSUBSCRIBE``,
``smessage``, Redis 7), and hands every message to the broker's callback.

Under load a link costs one reader task and one watchdog loop, whatever its number of topics.
On failure (the reader ends, a ping goes unanswered) `Link.watch` raises, and the broker
reconnects; pending confirmations then complete, since the new connection subscribes what is
wanted at that time.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import FIRST_COMPLETED
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["TRANSPORT_ERRORS", "Link", "close_connection", "where"]

logger = logging.getLogger("fastapi_channels.brokers.redis")

TRANSPORT_ERRORS: Final = (RedisError, OSError)
_CHUNK: Final = 1000

MessageCallback = Callable[[bytes, bytes], None]
"""Called with the Redis channel and the payload of each message, in arrival order."""


class Link:
    """A connected subscriber connection, subscribed to the channels it was given.

    Args:
        conn: the connection, already connected; the link closes it in `close`.
        on_message: called for each message.
        sharded: speak sharded pub/sub (``SSUBSCRIBE``) rather than plain pub/sub.
        on_unrequested: called with the channel when the server ends a subscription nobody
            asked to end (Redis 7 does so when a shard channel's slot moves away).
        timeout: seconds to wait for a confirmation.
    """

    def __init__(
        self,
        conn: AbstractConnection,
        on_message: MessageCallback,
        *,
        sharded: bool = False,
        on_unrequested: Callable[[bytes], None] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.conn = conn
        self._on_message = on_message
        self._on_unrequested = on_unrequested
        self._timeout = timeout
        prefix = "S" if sharded else ""
        self._subscribe, self._unsubscribe = f"{prefix}SUBSCRIBE", f"{prefix}UNSUBSCRIBE"
        self._message = b"smessage" if sharded else b"message"
        self._chunk = 1 if sharded else _CHUNK  # an SSUBSCRIBE's channels must share a slot
        self._kinds = {
            self._subscribe.lower().encode(): b"subscribe",
            self._unsubscribe.lower().encode(): b"unsubscribe",
        }
        self._confirmations: dict[tuple[bytes, bytes], deque[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.last_seen = 0.0
        self._pinged_at: float | None = None

    @property
    def where(self) -> str:
        """The ``host:port`` the connection reached."""
        return where(self.conn)

    async def join(self, channels: Sequence[bytes]) -> None:
        """Subscribe ``channels`` in one write, start reading, and wait for every confirmation.

        Raises:
            RedisError, OSError: the connection failed, or the confirmations did not all
                come within ``timeout``.
        """
        self.last_seen = asyncio.get_running_loop().time()
        confirmations = [self._expect(b"subscribe", channel) for channel in channels]
        if channels:  # in one write, so no unsubscribe sent meanwhile can overtake it
            chunks = range(0, len(channels), self._chunk)
            commands: list[list[bytes | str]] = [
                [self._subscribe, *channels[i : i + self._chunk]] for i in chunks
            ]
            await self.conn.send_packed_command(
                self.conn.pack_commands(commands), check_health=False
            )
        self._reader = reader = asyncio.create_task(self._read(), name="fastapi_channels.redis.sub")
        if not confirmations:
            return
        subscribed = asyncio.gather(*confirmations)
        waited: set[asyncio.Future[Any]] = {reader, subscribed}
        await asyncio.wait(waited, timeout=self._timeout, return_when=FIRST_COMPLETED)
        if reader.done():
            reader.result()
            raise RedisError("the subscriber connection ended")
        if not subscribed.done():
            subscribed.cancel()
            raise RedisTimeoutError(f"Redis did not confirm {len(channels)} subscriptions")

    async def change(self, subscribe: bool, channel: bytes) -> None:
        """Subscribe or unsubscribe ``channel`` and wait for the confirmation.

        Returns at once when the connection is lost, and after ``timeout`` without a
        confirmation: the watchdog notices a hung server, and reconnecting subscribes what is
        wanted then.
        """
        kind = b"subscribe" if subscribe else b"unsubscribe"
        confirmed = self._expect(kind, channel)
        command = self._subscribe if subscribe else self._unsubscribe
        try:
            await self.conn.send_command(command, channel, check_health=False)
        except TRANSPORT_ERRORS:
            return
        try:
            async with asyncio.timeout(self._timeout):
                await confirmed
        except TimeoutError:
            logger.debug("no confirmation of %s %r from Redis", command, channel)

    async def watch(
        self,
        ping_interval: float,
        wake: Callable[[], Awaitable[Any]] | None = None,
        *,
        each_interval: bool = False,
    ) -> None:
        """Ping the server when it is silent; raise when the reader fails or a ping is unanswered.

        ``wake`` (when given) is awaited alongside: when it completes, this returns, so the
        caller can check something (where the master is) and watch again; with
        ``each_interval`` it also returns after every ``ping_interval``.
        """
        assert self._reader is not None, "join() first"
        loop = asyncio.get_running_loop()
        while True:
            waiter = asyncio.ensure_future(wake()) if wake is not None else None
            try:
                waited: set[asyncio.Future[Any]] = {self._reader}
                if waiter is not None:
                    waited.add(waiter)
                await asyncio.wait(waited, timeout=ping_interval, return_when=FIRST_COMPLETED)
            finally:
                if waiter is not None:
                    waiter.cancel()
            if self._reader.done():
                self._reader.result()
                raise RedisError("the subscriber connection ended")
            now = loop.time()
            if self._pinged_at is not None:
                if self.last_seen >= self._pinged_at:
                    self._pinged_at = None
                elif now - self._pinged_at >= ping_interval:
                    raise RedisTimeoutError(f"no answer to PING within {ping_interval} s")
            if self._pinged_at is None and now - self.last_seen >= ping_interval:
                self._pinged_at = now
                await self.conn.send_command("PING", check_health=False)
            if each_interval or (waiter is not None and waiter.done() and not waiter.cancelled()):
                return

    async def close(self) -> None:
        """Stop reading, complete pending confirmations and close the connection."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.wait({reader})
            if not reader.cancelled():
                reader.exception()  # retrieved: the broker already reports the failure
        for waiting in self._confirmations.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        self._confirmations.clear()
        await close_connection(self.conn)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            response = await self.conn.read_response(push_request=True)
            self.last_seen = loop.time()
            if not isinstance(response, list) or len(response) < 3:
                continue  # PONG outside subscribed mode
            kind, channel = response[0], response[1]
            if kind == self._message:
                self._on_message(channel, response[2])
            elif (confirmed := self._kinds.get(kind)) is not None:
                requested = self._confirm(confirmed, channel)
                if not requested and confirmed == b"unsubscribe" and self._on_unrequested:
                    self._on_unrequested(channel)

    def _expect(self, kind: bytes, channel: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault((kind, channel), deque()).append(future)
        return future

    def _confirm(self, kind: bytes, channel: bytes) -> bool:
        """Resolve the oldest wait for this confirmation; False when none was waiting."""
        waiting = self._confirmations.get((kind, channel))
        if not waiting:
            return False
        future = waiting.popleft()
        if not waiting:
            del self._confirmations[kind, channel]
        if not future.done():
            future.set_result(None)
        return True


async def close_connection(conn: AbstractConnection) -> None:
    """Close ``conn`` without waiting for the server; errors are logged at debug level."""
    try:
        await conn.disconnect(nowait=True)
    except TRANSPORT_ERRORS:
        logger.debug("error while closing a Redis connection", exc_info=True)


def where(conn: AbstractConnection) -> str:
    """The ``host:port`` a connection reached (or was made for)."""
    return f"{getattr(conn, 'host', '?')}:{getattr(conn, 'port', '?')}"
