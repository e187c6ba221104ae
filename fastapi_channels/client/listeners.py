"""Callbacks by event name, shared by the client and its channels."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from fastapi_channels.client.packets import Packet

__all__ = ["Callback", "Listeners"]

logger = logging.getLogger("fastapi_channels.client")

Callback = Callable[[Packet], None] | Callable[[Packet], Awaitable[None]]
C = TypeVar("C", bound=Callback)

_tasks: set[asyncio.Task[None]] = set()


class Listeners:
    """Several callbacks per event, plain or ``async``; a failing one is logged, never raised.

    Plain callbacks run on the client's reader, so a slow one delays every later packet;
    ``async`` callbacks each run as a task of their own and do not.
    """

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = {}

    @overload
    def on(self, event: str) -> Callable[[C], C]: ...

    @overload
    def on(self, event: str, callback: C) -> C: ...

    def on(self, event: str, callback: C | None = None) -> C | Callable[[C], C]:
        """Call ``callback(packet)`` for each ``event``; usable as a decorator without it."""

        def register(func: C) -> C:
            self._callbacks.setdefault(event, []).append(func)
            return func

        return register if callback is None else register(callback)

    def off(self, event: str, callback: Callback | None = None) -> None:
        """Remove one callback of ``event``, or all of them without ``callback``."""
        if callback is None:
            self._callbacks.pop(event, None)
        elif callback in self._callbacks.get(event, ()):
            self._callbacks[event].remove(callback)

    def _has_callbacks(self, event: str) -> bool:
        return bool(self._callbacks.get(event))

    def _dispatch(self, packet: Packet) -> bool:
        """Run the callbacks of ``packet.event``; returns whether there were any."""
        callbacks = self._callbacks.get(packet.event)
        if not callbacks:
            return False
        for callback in list(callbacks):
            _invoke(callback, packet)
        return True


def _invoke(callback: Callback, packet: Packet) -> None:
    try:
        result: Any = callback(packet)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(_guarded(result, packet))
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)
    except Exception:
        logger.exception("a callback for %r failed", packet.event)


async def _guarded(result: Awaitable[Any], packet: Packet) -> None:
    try:
        await result
    except Exception:
        logger.exception("a callback for %r failed", packet.event)
