"""Running a coroutine's first step in place, and finishing it later as a task would.

Most sends and most handlers complete without ever suspending (the socket has room, the
handler only publishes to the in-memory broker). Stepping such a coroutine directly
(``coro.send(None)``) runs it to the end with no task, future or timer; only one that does
suspend needs the machinery (a writer task, a deadline), and `resume` continues it there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["resume"]

T = TypeVar("T")


async def resume(coro: Coroutine[Any, Any, T], waiting: asyncio.Future[Any] | None) -> T:
    """Run to completion a coroutine that was started outside a task and then suspended.

    It suspended on ``waiting`` (or on a bare yield, ``None``), as an ``await`` does inside a
    task; wait for that, then step the coroutine again, as a task would, and return its
    result. Cancellation (a timeout's too) is passed into the coroutine.
    """
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                await asyncio.wait((waiting,))
        except asyncio.CancelledError as exc:
            if waiting is not None:
                waiting.cancel()
            try:
                waiting = coro.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            continue
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
