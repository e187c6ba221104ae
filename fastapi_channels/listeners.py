"""Listener classes and the decorators that declare them.

A channel listener is a class decorated with ``@channel("pattern")`` whose handlers are
methods decorated with ``@channel.on("event")``; a plain listener is a class decorated with
``@listener("event")`` with a ``handle`` method. The decorators only mark classes; a
``Channels`` instance registers them, and its ``injector`` container builds one instance of
each when the server starts, so constructors can take ``SocketServer`` or any bound service.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import injector

from fastapi_channels.errors import ConfigurationError
from fastapi_channels.middleware import Middleware
from fastapi_channels.patterns import ChannelPattern
from fastapi_channels.protocol import RESERVED_EVENTS, SocketPacket

if TYPE_CHECKING:
    from fastapi_channels.connection import SocketConnection
    from fastapi_channels.registry import ChannelRoute
    from fastapi_channels.server import SocketServer

__all__ = [
    "ChannelListener",
    "Handler",
    "SocketListener",
    "Subscription",
    "channel",
    "listener",
]

Handler = Callable[["SocketConnection", Any, SocketPacket], Awaitable[Any]]
"""A bound handler: ``(connection, user, packet)``."""

L = TypeVar("L", bound=type)
F = TypeVar("F", bound=Callable[..., Any])

_EVENTS_ATTR = "__fastapi_channels_events__"


@dataclass(slots=True, frozen=True)
class Subscription:
    """One connection's subscription to one concrete channel: three references, no copies.

    Attributes:
        channel: the concrete channel name, exactly as the client requested it.
        wildcard: what the pattern's ``*`` matched (``""`` for an exact pattern).
        route: the registered listener that serves the channel (shared by all subscriptions).
    """

    channel: str
    wildcard: str
    route: ChannelRoute


_current_subscription: ContextVar[Subscription] = ContextVar("fastapi_channels_subscription")


class ChannelListener:
    """Base class of channel listeners.

    One instance serves every subscription to every channel its pattern matches, so it must
    not keep per-subscription state in attributes; :attr:`channel_name` and :attr:`wildcard`
    read the subscription being served from a context variable instead.

    Class attributes:
        pattern: set by ``@channel``.
        middleware: middleware (instances, or classes built by the container) for this channel.
        require_user: refuse subscriptions and events from anonymous connections.
    """

    pattern: ClassVar[ChannelPattern]
    middleware: ClassVar[Sequence[Middleware | type[Middleware]]] = ()
    require_user: ClassVar[bool] = False
    _server: SocketServer

    async def is_authorised(self, connection: SocketConnection, user: Any) -> bool:
        """Decide whether ``connection`` may subscribe; the default allows everyone.

        Called once per subscribe request, after this channel's middleware. Raising ``Reject``
        refuses with its reason; any other exception refuses with a generic reason and is logged.
        """
        return True

    @property
    def channel_name(self) -> str:
        """The concrete channel being served (e.g. ``user:chat.1`` for ``user:chat.*``).

        Raises:
            LookupError: read outside ``is_authorised``, a handler or this channel's middleware.
        """
        return _current_subscription.get().channel

    @property
    def wildcard(self) -> str:
        """What the pattern's ``*`` matched in :attr:`channel_name` (``""`` without a ``*``)."""
        return _current_subscription.get().wildcard

    def get_channel_name(self) -> str:
        """Alias of :attr:`channel_name`, Envuso's spelling."""
        return self.channel_name

    async def broadcast(self, channel: str, event: str, data: Any = None) -> None:
        """Send ``event`` to every subscriber of the concrete ``channel`` of this listener.

        See :meth:`SocketServer.broadcast` for the behaviour under load.
        """
        await self._server.broadcast(type(self), channel, event, data)


class SocketListener:
    """Base class of plain event listeners (no channel): override :meth:`handle`.

    Class attributes:
        event: set by ``@listener``.
        require_user: refuse the event from anonymous connections.
    """

    event: ClassVar[str]
    require_user: ClassVar[bool] = False
    _server: SocketServer

    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> Any:
        """Handle one packet of this listener's event."""
        raise NotImplementedError  # pragma: no cover - the decorator checks it is overridden

    def event_name(self) -> str:
        """The event this listener handles (Envuso's spelling)."""
        return self.event


def _check_handler(owner: type, name: str, func: Any) -> None:
    if not inspect.iscoroutinefunction(func):
        raise ConfigurationError(f"{owner.__qualname__}.{name} must be an async function")
    params = list(inspect.signature(func).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 4 and not any(p.kind is p.VAR_POSITIONAL for p in params):
        raise ConfigurationError(
            f"{owner.__qualname__}.{name} must take (self, connection, user, packet)"
        )


def _check_event_name(owner: type, event: str) -> None:
    if not isinstance(event, str) or not event:
        raise ConfigurationError(f"{owner.__qualname__}: an event name must be a non-empty string")
    if event in RESERVED_EVENTS:
        raise ConfigurationError(f"{owner.__qualname__}: event name {event!r} is reserved")


def _make_injectable(cls: type) -> None:
    init = cls.__dict__.get("__init__")
    if init is not None and not hasattr(init, "__bindings__"):
        cls.__init__ = injector.inject(init)  # type: ignore[misc]


class _ChannelDecorator:
    """``@channel("pattern")`` declares a channel listener; ``@channel.on("event")`` a handler."""

    def __call__(self, pattern: str) -> Callable[[L], L]:
        parsed = ChannelPattern.parse(pattern)

        def decorate(cls: L) -> L:
            if not (isinstance(cls, type) and issubclass(cls, ChannelListener)):
                raise ConfigurationError("@channel decorates ChannelListener subclasses")
            cls.pattern = parsed
            handlers(cls)  # validate now, at import time
            _make_injectable(cls)
            return cls

        return decorate

    @staticmethod
    def on(event: str) -> Callable[[F], F]:
        """Mark a listener method as the handler of ``event`` (any name, ``deleted-message`` too).

        The method must be ``async def name(self, connection, user, packet)``.
        """

        def decorate(func: F) -> F:
            events: tuple[str, ...] = getattr(func, _EVENTS_ATTR, ())
            setattr(func, _EVENTS_ATTR, (*events, event))
            return func

        return decorate


channel = _ChannelDecorator()


def listener(event: str) -> Callable[[L], L]:
    """Declare a plain event listener class handling ``event`` in its ``handle`` method."""

    def decorate(cls: L) -> L:
        if not (isinstance(cls, type) and issubclass(cls, SocketListener)):
            raise ConfigurationError("@listener decorates SocketListener subclasses")
        _check_event_name(cls, event)
        if cls.handle is SocketListener.handle:
            raise ConfigurationError(f"{cls.__qualname__} must define handle()")
        _check_handler(cls, "handle", cls.handle)
        cls.event = event
        _make_injectable(cls)
        return cls

    return decorate


def handlers(cls: type[ChannelListener]) -> dict[str, str]:
    """Map each event of ``cls`` to the name of its handler method, base classes included.

    Raises:
        ConfigurationError: a reserved event name, one event with two handlers in one class, or
            a handler with the wrong signature.
    """
    table: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        own: dict[str, str] = {}
        for name, member in vars(klass).items():
            for event in getattr(member, _EVENTS_ATTR, ()):
                _check_event_name(cls, event)
                _check_handler(cls, name, member)
                if event in own:
                    raise ConfigurationError(
                        f"{cls.__qualname__}: event {event!r} has two handlers, "
                        f"{own[event]} and {name}"
                    )
                own[event] = name
        table.update(own)
    return table
