"""Middleware: an async chain around connect, subscribe and channel events.

A middleware subclasses `Middleware` and overrides the hooks it needs; each hook gets a
`MiddlewareContext` and ``call_next``, and refuses by raising
`Reject`. Global middleware (given to ``Channels``) runs for
every stage, the first in the list outermost; a channel listener's own middleware runs at
subscribe (before ``is_authorised``) and around that channel's events. A hook that is not
overridden costs nothing: it is left out of the chain when the chain is built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from fastapi_channels.core.connection import SocketConnection
    from fastapi_channels.wire.protocol import SocketPacket

__all__ = ["CallNext", "Middleware", "MiddlewareContext", "Stage", "hooks_for", "run_chain"]

Stage = Literal["connect", "subscribe", "event"]
CallNext = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class MiddlewareContext:
    """What a middleware hook sees.

    Attributes:
        connection: the connection concerned.
        stage: ``"connect"``, ``"subscribe"`` or ``"event"``.
        channel: the concrete channel name (subscribe and channel events), else None.
        wildcard: the value the channel pattern's ``*`` matched (``""`` for exact names).
        packet: the packet being handled (events), else None.
    """

    connection: SocketConnection
    stage: Stage
    channel: str | None = None
    wildcard: str | None = None
    packet: SocketPacket | None = None

    @property
    def user(self) -> Any:
        """The connection's user, ``None`` when anonymous."""
        return self.connection.user


class Middleware:
    """Base class for middleware; every hook passes through unless overridden.

    Hooks run on the connection's reader, so a slow hook delays only that connection's packets.
    An exception other than ``Reject`` is logged and answered as a refusal with a generic
    reason; it never affects other connections.
    """

    async def connect(self, context: MiddlewareContext, call_next: CallNext) -> None:
        """Run once per connection, before ``ready`` is sent."""
        await call_next()

    async def subscribe(self, context: MiddlewareContext, call_next: CallNext) -> None:
        """Run for each subscribe request, before ``is_authorised``."""
        await call_next()

    async def event(self, context: MiddlewareContext, call_next: CallNext) -> None:
        """Run around each event handler."""
        await call_next()


def hooks_for(middleware: Sequence[Middleware], stage: Stage) -> tuple[Middleware, ...]:
    """The middleware in ``middleware`` that override the ``stage`` hook, in order."""
    base = getattr(Middleware, stage)
    return tuple(m for m in middleware if getattr(type(m), stage) is not base)


async def run_chain(
    middleware: Sequence[Middleware],
    context: MiddlewareContext,
    final: CallNext,
) -> None:
    """Run ``final`` wrapped by the ``context.stage`` hook of each middleware, first outermost."""
    if not middleware:
        await final()
        return
    stage = context.stage

    async def step(index: int) -> None:
        if index == len(middleware):
            await final()
            return
        hook = getattr(middleware[index], stage)
        await hook(context, lambda: step(index + 1))

    await step(0)
