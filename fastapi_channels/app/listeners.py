"""Listener classes and the decorators that declare them.

A channel listener is a class decorated with ``@channel("pattern")`` whose handlers are
methods decorated with ``@channel.on("event")``, and which may filter what it broadcasts per
recipient with one method decorated ``@channel.outgoing(...)``; a plain listener is a class
decorated with ``@listener("event")`` with a ``handle`` method. The decorators only mark
classes; a ``Channels`` instance registers them, and its ``injector`` container builds one
instance of each when the server starts, so constructors can take ``SocketServer`` or any bound
service.

Handlers take Envuso's ``(self, connection, user, packet)`` or typed parameters (see
`fastapi_channels.app.invocation`); their signatures are checked when the class is decorated
(as far as its type hints can be resolved then) and again, fully, when it is registered.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from fastapi_channels.app.building import make_injectable
from fastapi_channels.app.invocation import HANDLER, IS_AUTHORISED, plan_for
from fastapi_channels.app.middleware import Middleware
from fastapi_channels.core.channel import current_subscription
from fastapi_channels.wire.errors import ConfigurationError
from fastapi_channels.wire.history import History, Position
from fastapi_channels.wire.patterns import ChannelPattern
from fastapi_channels.wire.protocol import RESERVED_EVENTS

if TYPE_CHECKING:
    from fastapi_channels.core.connection import SocketConnection
    from fastapi_channels.core.server import SocketServer

__all__ = [
    "ChannelListener",
    "SocketListener",
    "channel",
    "handlers",
    "listener",
    "outgoing_hook",
]

L = TypeVar("L", bound=type)
F = TypeVar("F", bound=Callable[..., Any])

_EVENTS_ATTR = "__fastapi_channels_events__"
_OUTGOING_ATTR = "__fastapi_channels_outgoing__"


class ChannelListener:
    """Base class of channel listeners.

    One instance serves every subscription to every channel its pattern matches, so it must
    not keep per-subscription state in attributes; `channel_name` and `wildcard`
    read the subscription being served from a context variable instead.

    Attributes:
        pattern: set by ``@channel``.
        middleware: middleware (instances, or classes built by the container) for this channel.
        require_user: refuse subscriptions and events from anonymous connections.
        sends: the events this listener sends to its subscribers, with their data types
            (``{"message": ChatMessage}``); documentation only, for the AsyncAPI document.
        presence: make the channels presence channels: subscribers get the member list
            (``channels:presence``) and ``channels:join`` / ``channels:leave`` events, with
            each member's `member_info` (see ``docs/presence-and-history.md``).
        history: keep the channels' last broadcasts (a `History`): their events carry
            a ``position``, and a subscriber coming back with its last position receives what
            it missed.
    """

    pattern: ClassVar[ChannelPattern]
    middleware: ClassVar[Sequence[Middleware | type[Middleware]]] = ()
    require_user: ClassVar[bool] = False
    sends: ClassVar[Mapping[str, Any]] = {}
    presence: ClassVar[bool] = False
    history: ClassVar[History | None] = None
    _server: SocketServer

    async def is_authorised(self, *args: Any, **kwargs: Any) -> bool:
        """Decide whether a connection may subscribe; the default allows everyone.

        Override it as ``async def is_authorised(self, connection, user) -> bool`` (Envuso's
        form) or with typed parameters; the open base signature lets a type checker accept
        either.

        Called once per subscribe request, after this channel's middleware. Raising ``Reject``
        refuses with its reason; any other exception refuses with a generic reason and is logged.
        An override may take typed parameters like a handler: a parameter annotated with a
        pydantic model receives the subscribe request's ``data`` (``channel`` included)
        validated into it, and invalid data refuses the subscription.
        """
        return True

    def member_info(
        self, connection: SocketConnection, user: Any
    ) -> Mapping[str, Any] | Awaitable[Mapping[str, Any]]:
        """What the other subscribers of a presence channel see of ``user``; may be async.

        Called when a user's connection makes it join a channel (its first connection on a
        process), with `channel_name` set. The result is public: every subscriber of
        the channel receives it. It must be JSON-serialisable; an ``id`` (the user key) is
        added when it has none, so clients can match a ``channels:leave`` with a member. The
        default is ``{"id": <user key>}``. If it raises, the member is listed with the
        default (and the error is logged).
        """
        return {"id": connection.user_key}

    @property
    def channel_name(self) -> str:
        """The concrete channel being served (e.g. ``user:chat.1`` for ``user:chat.*``).

        Raises:
            LookupError: read outside ``is_authorised``, a handler or this channel's middleware.
        """
        return current_subscription.get().channel

    @property
    def wildcard(self) -> str:
        """What the pattern's ``*`` matched in `channel_name` (``""`` without a ``*``)."""
        return current_subscription.get().wildcard

    def get_channel_name(self) -> str:
        """Alias of `channel_name`, Envuso's spelling."""
        return self.channel_name

    async def broadcast(
        self,
        channel: str,
        event: str,
        data: Any = None,
        *,
        exclude: SocketConnection | str | None = None,
    ) -> Position | None:
        """Send ``event`` to every subscriber of the concrete ``channel`` of this listener.

        With ``exclude`` (a handler's ``connection``, say), every subscriber but that
        connection receives it, on every process. Returns the message's position when the
        listener keeps a history. See `SocketServer.broadcast` for the behaviour under load.
        """
        return await self._server.broadcast(type(self), channel, event, data, exclude=exclude)


class SocketListener:
    """Base class of plain event listeners (no channel): override `handle`.

    Attributes:
        event: set by ``@listener``.
        require_user: refuse the event from anonymous connections.
        sends: the plain events this listener sends, with their data types; documentation
            only, for the AsyncAPI document.
    """

    event: ClassVar[str]
    require_user: ClassVar[bool] = False
    sends: ClassVar[Mapping[str, Any]] = {}
    _server: SocketServer

    async def handle(self, *args: Any, **kwargs: Any) -> Any:
        """Handle one packet of this listener's event.

        Override it as ``async def handle(self, connection, user, packet)`` (Envuso's form) or
        with typed parameters, as a channel handler; the open base signature lets a type
        checker accept either. The return value is the reply's ``data`` when the packet carried
        an ``id``.
        """
        raise NotImplementedError  # pragma: no cover - the decorator checks it is overridden

    def event_name(self) -> str:
        """The event this listener handles (Envuso's spelling)."""
        return self.event


def _check_event_name(owner: type, event: str) -> None:
    if not isinstance(event, str) or not event:
        raise ConfigurationError(f"{owner.__qualname__}: an event name must be a non-empty string")
    if event in RESERVED_EVENTS:
        raise ConfigurationError(f"{owner.__qualname__}: event name {event!r} is reserved")


class _ChannelDecorator:
    """``@channel("pattern")`` declares a channel listener; ``@channel.on("event")`` a handler."""

    def __call__(self, pattern: str) -> Callable[[L], L]:
        parsed = ChannelPattern.parse(pattern)

        def decorate(cls: L) -> L:
            if not (isinstance(cls, type) and issubclass(cls, ChannelListener)):
                raise ConfigurationError("@channel decorates ChannelListener subclasses")
            cls.pattern = parsed
            handlers(cls, strict=False)  # validate now, as far as the hints resolve
            outgoing_hook(cls)
            if cls.is_authorised is not ChannelListener.is_authorised:
                plan_for(cls, "is_authorised", IS_AUTHORISED, strict=False)
            make_injectable(cls)
            return cls

        return decorate

    @staticmethod
    def on(event: str) -> Callable[[F], F]:
        """Mark a listener method as the handler of ``event`` (any name, ``deleted-message`` too).

        The method is ``async def name(self, connection, user, packet)``, or takes typed
        parameters (a pydantic model for the data, ``SocketConnection``, ``SocketPacket``,
        ``user``). What it returns is the reply's ``data`` when the packet carried an ``id``.
        """

        def decorate(func: F) -> F:
            events: tuple[str, ...] = getattr(func, _EVENTS_ATTR, ())
            setattr(func, _EVENTS_ATTR, (*events, event))
            return func

        return decorate

    @staticmethod
    def outgoing(*events: str) -> Callable[[F], F]:
        """Mark the listener's outgoing filter, for ``events`` (every event when none is given).

        The method is a plain (not async) ``def name(self, connection, event, data)``, called
        for each recipient of each broadcast of those events on this listener's channels. It
        returns the data to send (the very ``data`` object to send the shared frame unchanged;
        another object is encoded for that recipient only) or ``DROP`` to send nothing to that
        recipient. ``self.channel_name`` and ``self.wildcard`` give the channel.

        It runs on the fan-out path, so it must not block: it cannot await, and it should
        decide from what it has at hand (the connection, its user, the data). It must not
        mutate ``data``, which all recipients share. An exception drops the event for that
        recipient and is logged. See ``docs/typed-events.md`` for the trade-offs.
        """
        for event in events:
            if not isinstance(event, str) or not event:
                raise ConfigurationError("@channel.outgoing takes event names")

        def decorate(func: F) -> F:
            setattr(func, _OUTGOING_ATTR, frozenset(events) or None)
            return func

        return decorate


channel = _ChannelDecorator()
"""Declares channel listeners and their handlers.

- `@channel("user:chat.*")` on a `ChannelListener` subclass declares the pattern it serves (at
  most one `*`, matching a non-empty run of characters without `:`). A malformed pattern
  raises `ConfigurationError` at once; a handler whose signature cannot be satisfied raises
  it when the class is decorated or registered.
- `@channel.on("event")` marks a method as the handler of an event.
- `@channel.outgoing("event", ...)` marks the listener's outgoing filter.
"""


def listener(event: str) -> Callable[[L], L]:
    """Declare a plain event listener class handling ``event`` in its ``handle`` method."""

    def decorate(cls: L) -> L:
        if not (isinstance(cls, type) and issubclass(cls, SocketListener)):
            raise ConfigurationError("@listener decorates SocketListener subclasses")
        _check_event_name(cls, event)
        if cls.handle is SocketListener.handle:
            raise ConfigurationError(f"{cls.__qualname__} must define handle()")
        plan_for(cls, "handle", HANDLER, strict=False)
        cls.event = event
        make_injectable(cls)
        return cls

    return decorate


def handlers(cls: type[ChannelListener], *, strict: bool = True) -> dict[str, str]:
    """Map each event of ``cls`` to the name of its handler method, base classes included.

    Args:
        cls: the listener class.
        strict: whether a type hint that cannot be resolved yet is an error (registration)
            or postpones the signature check (class decoration).

    Raises:
        ConfigurationError: a reserved event name, one event with two handlers in one class, or
            a handler whose signature cannot be satisfied.
    """
    table: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        own: dict[str, str] = {}
        for name, member in vars(klass).items():
            for event in getattr(member, _EVENTS_ATTR, ()):
                _check_event_name(cls, event)
                plan_for(klass, name, HANDLER, strict=strict)
                if event in own:
                    raise ConfigurationError(
                        f"{cls.__qualname__}: event {event!r} has two handlers, "
                        f"{own[event]} and {name}"
                    )
                own[event] = name
        table.update(own)
    return table


def outgoing_hook(cls: type[ChannelListener]) -> tuple[str, frozenset[str] | None] | None:
    """The name of ``cls``'s outgoing filter and the events it sees (None: all), if it has one.

    Raises:
        ConfigurationError: two filters in one class, an async filter, or one that does not
            take ``(self, connection, event, data)``.
    """
    found: tuple[str, frozenset[str] | None] | None = None
    for klass in reversed(cls.__mro__):
        own = [
            (name, getattr(member, _OUTGOING_ATTR))
            for name, member in vars(klass).items()
            if hasattr(member, _OUTGOING_ATTR)
        ]
        if len(own) > 1:
            raise ConfigurationError(
                f"{klass.__qualname__} has two outgoing filters: {own[0][0]} and {own[1][0]}"
            )
        if own:
            found = own[0]
    if found is None:
        return None
    name = found[0]
    func = inspect.getattr_static(cls, name)
    qualname = f"{cls.__qualname__}.{name}"
    if inspect.iscoroutinefunction(func) or not inspect.isfunction(func):
        raise ConfigurationError(
            f"{qualname} must be a plain (not async) method: it runs on the fan-out path"
        )
    try:
        inspect.signature(func).bind(None, None, "event", None)
    except TypeError:
        raise ConfigurationError(f"{qualname} must take (self, connection, event, data)") from None
    return found
