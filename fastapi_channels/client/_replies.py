"""Requests and their replies: each request gets a fresh ``id`` and waits for the one answer.

The ids are consecutive integers from 1, never reused for the life of the client, so a late
reply to a request that timed out finds nothing and is ignored rather than answering a newer
one. A request is sent again only when the caller asked for retries, with the same idempotency
``key`` (see `retrying`); when the connection is lost first, every request still waiting fails
with `ConnectionClosed`, because the server may or may not have handled it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi_channels.client.errors import ConnectionClosed, ReplyError

__all__ = ["RETRIED_CODES", "PendingRequests", "new_key"]

RETRIED_CODES = frozenset({"outcome-unknown", "broker-unavailable"})
"""The error codes a request with retries is sent again after (as is a request without reply)."""


def new_key() -> str:
    """A fresh idempotency key: 32 random hex characters."""
    return secrets.token_hex(16)


class PendingRequests:
    """The requests sent and not answered yet, by id.

    Holds one future per waiting request and nothing else: a request that times out or whose
    caller is cancelled is forgotten at once, so the table never grows beyond the requests
    actually awaited.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._last_id = 0

    async def request(
        self,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        event: str,
        data: Any,
        channel: str | None,
        timeout: float,
        key: str | None = None,
    ) -> Any:
        """Send ``event`` with a fresh id (and ``key``) through ``send``; return the reply's data.

        Raises:
            ReplyError: the server answered with an error.
            TimeoutError: no reply within ``timeout`` seconds.
            ConnectionClosed: ``send`` failed, or the connection was lost before the reply.
        """
        self._last_id += 1
        request_id = self._last_id
        packet: dict[str, Any] = {"event": event, "data": data, "id": request_id}
        if channel is not None:
            packet["channel"] = channel
        if key is not None:
            packet["key"] = key
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await send(packet)
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._waiting.pop(request_id, None)

    async def retrying(
        self,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        event: str,
        data: Any,
        channel: str | None,
        timeout: float,
        key: str,
        retries: int,
        delay: float,
    ) -> Any:
        """`request` with ``key``, sent again up to ``retries`` times with the same key.

        A request is sent again when its reply is an error with a code in `RETRIED_CODES`, or
        when no reply came within ``timeout``; the n-th retry waits ``delay * n`` seconds first.
        The server delivers the handler's broadcasts once per key, so a retry is safe.

        Raises:
            ReplyError: the last attempt's error, or any error not in `RETRIED_CODES`.
            TimeoutError: the last attempt got no reply.
            ConnectionClosed: as `request` (not retried: the connection is gone).
        """
        for attempt in range(retries + 1):
            if attempt:
                await asyncio.sleep(delay * attempt)
            try:
                return await self.request(send, event, data, channel, timeout, key)
            except ReplyError as exc:
                if attempt == retries or exc.code not in RETRIED_CODES:
                    raise
            except TimeoutError:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def settle(self, request_id: Any, data: Any, error: Any) -> bool:
        """Answer the request ``request_id``: with `ReplyError` when ``error`` is set.

        Returns whether a request was waiting for it; an unknown or late id is left to the
        caller to log.
        """
        future = self._waiting.pop(request_id, None) if isinstance(request_id, int) else None
        if future is None or future.done():
            return False
        if error:
            future.set_exception(ReplyError.from_reply(error))
        else:
            future.set_result(data)
        return True

    def fail_all(self, error: ConnectionClosed) -> None:
        """Fail every waiting request with ``error`` (the connection is gone)."""
        waiting = list(self._waiting.values())
        self._waiting.clear()
        for future in waiting:
            if not future.done():
                future.set_exception(error)
