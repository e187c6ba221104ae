"""Requests and their replies: each request gets a fresh ``id`` and waits for the one answer.

The ids are consecutive integers from 1, never reused for the life of the client, so a late
reply to a request that timed out finds nothing and is ignored rather than answering a newer
one. A request is never sent twice: when the connection is lost first, every request still
waiting fails with `ConnectionClosed`, because the server may or may not have handled it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi_channels.client.errors import ConnectionClosed, ReplyError

__all__ = ["PendingRequests"]


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
    ) -> Any:
        """Send ``event`` with a fresh id through ``send`` and return the reply's ``data``.

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
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await send(packet)
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._waiting.pop(request_id, None)

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
