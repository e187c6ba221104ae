"""The listener registry: what is declared, validated at registration, built at start-up.

Registering a class reads every handler's signature once into an invocation plan (see
`fastapi_channels.app.invocation`); starting binds those plans to the listener instances the
container builds. Nothing about a handler is inspected per message.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi_channels.app.building import build
from fastapi_channels.app.invocation import HANDLER, IS_AUTHORISED, BoundHandler, plan_for
from fastapi_channels.app.listeners import ChannelListener, SocketListener, handlers, outgoing_hook
from fastapi_channels.app.middleware import Middleware, hooks_for
from fastapi_channels.core.channel import ChannelSpec
from fastapi_channels.core.outgoing import OutgoingFilter
from fastapi_channels.wire.errors import ConfigurationError
from fastapi_channels.wire.history import History
from fastapi_channels.wire.patterns import ChannelPattern, PatternTable

if TYPE_CHECKING:
    import injector

    from fastapi_channels.core.server import SocketServer

__all__ = ["ChannelRoute", "EventRoute", "ListenerRegistry"]


@dataclass(slots=True, eq=False)
class ChannelRoute:
    """A started channel listener: its instance, bound handlers and prepared middleware.

    Attributes:
        spec: what the core needs to know of the listener's channels (its pattern, outgoing
            filter, history and presence); subscriptions carry it.
        authorise: the listener's ``is_authorised``, with its plan; None when the listener
            keeps the default (everyone may subscribe), which then costs no call.
    """

    spec: ChannelSpec
    listener: ChannelListener
    handlers: dict[str, BoundHandler]
    subscribe_middleware: tuple[Middleware, ...]
    event_middleware: tuple[Middleware, ...]
    require_user: bool
    authorise: BoundHandler | None

    @property
    def pattern(self) -> ChannelPattern:
        """The pattern the listener serves."""
        return self.spec.pattern


@dataclass(slots=True, eq=False)
class EventRoute:
    """A started plain listener."""

    listener: SocketListener
    handler: BoundHandler
    event_middleware: tuple[Middleware, ...]
    require_user: bool


class ListenerRegistry:
    """Holds the declared listener classes and, once started, their routes."""

    def __init__(self) -> None:
        self._patterns: PatternTable[type[ChannelListener]] = PatternTable()
        self._events: dict[str, type[SocketListener]] = {}
        self.channels: PatternTable[ChannelRoute] = PatternTable()
        """The started channel routes, by pattern."""
        self.specs: PatternTable[ChannelSpec] = PatternTable()
        """The started routes' specs, by pattern (what the server resolves channels with)."""
        self.events: dict[str, EventRoute] = {}
        self._by_spec: dict[ChannelSpec, ChannelRoute] = {}

    def add(self, cls: type[ChannelListener] | type[SocketListener]) -> None:
        """Register a decorated listener class, reading its handlers' signatures.

        Raises:
            ConfigurationError: the class is not decorated, its pattern or event is registered
                already or ambiguous with a registered pattern, or a handler's (or
                ``is_authorised``'s) signature cannot be satisfied; the message names it.
        """
        if isinstance(cls, type) and issubclass(cls, ChannelListener):
            pattern = cls.__dict__.get("pattern")
            if not isinstance(pattern, ChannelPattern):
                raise ConfigurationError(f"{cls.__qualname__} is not decorated with @channel")
            handlers(cls)
            plan_for(cls, "is_authorised", IS_AUTHORISED)
            outgoing_hook(cls)
            _check_features(cls)
            self._patterns.add(pattern, cls)
        elif isinstance(cls, type) and issubclass(cls, SocketListener):
            event = cls.__dict__.get("event")
            if not isinstance(event, str):
                raise ConfigurationError(f"{cls.__qualname__} is not decorated with @listener")
            plan_for(cls, "handle", HANDLER)
            if event in self._events:
                raise ConfigurationError(
                    f"event {event!r} has two listeners: {self._events[event].__qualname__} "
                    f"and {cls.__qualname__}"
                )
            self._events[event] = cls
        else:
            raise ConfigurationError(f"{cls!r} is not a ChannelListener or SocketListener class")

    def discover(self, package: str) -> None:
        """Import ``package`` and its submodules and register every listener class they define."""
        root = importlib.import_module(package)
        modules = [root]
        for info in pkgutil.walk_packages(getattr(root, "__path__", []), prefix=f"{package}."):
            modules.append(importlib.import_module(info.name))
        for module in modules:
            for _, member in inspect.getmembers(module, inspect.isclass):
                if member.__module__ != module.__name__:
                    continue
                if ("pattern" in member.__dict__ and issubclass(member, ChannelListener)) or (
                    "event" in member.__dict__ and issubclass(member, SocketListener)
                ):
                    self.add(member)

    def start(
        self,
        container: injector.Injector,
        server: SocketServer,
        global_middleware: Sequence[Middleware],
    ) -> None:
        """Build every listener (and listener middleware class) with ``container``.

        Raises:
            ConfigurationError: the container cannot build a listener.
        """
        channels: PatternTable[ChannelRoute] = PatternTable()
        specs: PatternTable[ChannelSpec] = PatternTable()
        by_spec: dict[ChannelSpec, ChannelRoute] = {}
        for cls in self._patterns:
            instance = build(container, cls)
            instance._server = server
            own = [_middleware(container, m) for m in cls.middleware]
            chain = [*global_middleware, *own]
            hook = outgoing_hook(cls)
            spec = ChannelSpec(
                pattern=cls.pattern,
                outgoing=None
                if hook is None
                else OutgoingFilter(getattr(instance, hook[0]), hook[1]),
                history=cls.history,
                member_info=instance.member_info if cls.presence else None,
            )
            specs.add(cls.pattern, spec)
            by_spec[spec] = route = ChannelRoute(
                spec=spec,
                listener=instance,
                handlers={
                    event: _bind(cls, instance, name) for event, name in handlers(cls).items()
                },
                subscribe_middleware=hooks_for(chain, "subscribe"),
                event_middleware=hooks_for(chain, "event"),
                require_user=cls.require_user,
                authorise=(
                    None
                    if cls.is_authorised is ChannelListener.is_authorised
                    else _bind(cls, instance, "is_authorised", IS_AUTHORISED)
                ),
            )
            channels.add(cls.pattern, route)
        events: dict[str, EventRoute] = {}
        global_events = hooks_for(global_middleware, "event")
        for event, plain in self._events.items():
            listener = build(container, plain)
            listener._server = server
            events[event] = EventRoute(
                listener=listener,
                handler=_bind(plain, listener, "handle"),
                event_middleware=global_events,
                require_user=plain.require_user,
            )
        self.channels, self.specs, self.events, self._by_spec = channels, specs, events, by_spec

    def route_of(self, spec: ChannelSpec) -> ChannelRoute:
        """The started route whose listener a subscription's ``spec`` came from.

        Raises:
            KeyError: ``spec`` is not one of this registry's (it was started again since).
        """
        return self._by_spec[spec]

    @property
    def declares_history(self) -> bool:
        """Whether a registered channel listener keeps a history."""
        return any(cls.history is not None for cls in self._patterns)

    @property
    def declares_history_bound(self) -> bool:
        """Whether a registered channel listener bounds its history (``max_channels``)."""
        return any(
            cls.history is not None and cls.history.max_channels is not None
            for cls in self._patterns
        )

    @property
    def declares_presence(self) -> bool:
        """Whether a registered channel listener declares presence."""
        return any(cls.presence for cls in self._patterns)

    def classes(self) -> Iterable[type[ChannelListener] | type[SocketListener]]:
        """Every registered class."""
        yield from self._patterns
        yield from self._events.values()


def _check_features(cls: type[ChannelListener]) -> None:
    if cls.history is not None and not isinstance(cls.history, History):
        raise ConfigurationError(f"{cls.__qualname__}.history must be a History or None")
    if not isinstance(cls.presence, bool):
        raise ConfigurationError(f"{cls.__qualname__}.presence must be True or False")


def _bind(
    cls: type, instance: object, name: str, legacy: tuple[Any, ...] = HANDLER
) -> BoundHandler:
    plan = plan_for(cls, name, legacy)
    assert plan is not None  # strict plans are never postponed
    return plan.bind(getattr(instance, name))


def _middleware(container: injector.Injector, item: Middleware | type[Middleware]) -> Middleware:
    if isinstance(item, type):
        return build(container, item)
    return item
