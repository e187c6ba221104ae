"""The ``Channels`` plugin: configuration, registration, container and lifecycle in one object."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import injector

from fastapi_channels.app.building import build
from fastapi_channels.app.dispatcher import Dispatcher
from fastapi_channels.app.extensions import ConnectionExtension
from fastapi_channels.app.listeners import ChannelListener, SocketListener
from fastapi_channels.app.middleware import Middleware
from fastapi_channels.app.registry import ListenerRegistry
from fastapi_channels.brokers import (
    BoundedHistoryStore,
    Broker,
    HistoryStore,
    PresenceStore,
    create_broker,
)
from fastapi_channels.core.server import SocketServer
from fastapi_channels.edge import di
from fastapi_channels.edge.users import SocketUserMixin
from fastapi_channels.wire.errors import ConfigurationError
from fastapi_channels.wire.limits import Limits

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["Channels"]

logger = logging.getLogger("fastapi_channels")

BROKER_URL_ENV = "FASTAPI_CHANNELS_BROKER_URL"
"""The environment variable naming the broker when ``Channels(broker=...)`` is not given."""


class Channels:
    """Websocket channels for a FastAPI app; ``app.include_router(channels.router)`` wires it.

    Args:
        user: a FastAPI dependency returning the connection's user (``None`` = anonymous). It
            is resolved once per connection, at the handshake, with FastAPI's own ``Depends``
            machinery, so sub-dependencies and ``yield`` dependencies work (the latter live as
            long as the connection). An exception raised by it refuses the connection.
        path: where the websocket endpoint is mounted.
        listeners: listener classes to register.
        discover: package names whose modules are imported to register every listener in them.
        middleware: global middleware, first outermost; classes are built by the container.
        container: an ``injector.Injector`` holding the app's services; a new one by default.
        broker: a ``Broker``, or a URL (``memory://``, ``redis://...``, see
            `create_broker`). When not given, the URL in the
            ``FASTAPI_CHANNELS_BROKER_URL`` environment variable, else in memory.
        limits: per-connection limits and the outgoing queue's overflow policy.
        enabled: when False the router has no websocket route (Envuso's ``enabled``).
        allow_anonymous: when False a connection whose user is ``None`` is refused.
        user_id: how to get the id a user is reached by (default: ``socket_user_id()``, then
            ``.id``, then ``["id"]``/``["sub"]``, then the value itself for ``str``/``int``).
        extensions: per-connection extensions (see `fastapi_channels.app.extensions`). A
            ``user`` dependency with a ``connection_extension`` attribute (``JWTAuth``: token
            expiry and in-band renewal) adds it on its own.
        asyncapi: serve the AsyncAPI 3.0 document of the channels at ``{path}/asyncapi.json``
            (see `asyncapi`).
        asyncapi_url: the websocket URL clients connect to (``wss://chat.example.com/ws``; a
            URL without a path means ``path``), which the served document names in its
            ``servers``. Without it the served document has no ``servers``: the request's
            ``Host`` header is client input and is never copied into it.
        info_guard: a FastAPI dependency guarding ``GET {path}/info`` (this process's counts
            per channel and counters); the route exists only when a guard is given. It should
            raise (e.g. ``HTTPException(403)``) for callers who may not see it.
        presence_timeout: seconds after which the members of a process that stopped renewing
            its presence (it died, or lost Redis) are dropped; each process renews every third
            of it. Leaves are announced within four thirds of it.
        idempotency_window: seconds a broadcast's idempotency key is remembered, per channel
            (see ``SocketServer.broadcast``): a retry within it is delivered at most once.
        api_guard: a FastAPI dependency guarding the HTTP API under ``{path}/api`` (publish,
            send to a user, disconnect a user, presence, history, cluster-wide counts; see
            `fastapi_channels.edge.api`). The API exists only when a guard is given; the guard
            should raise ``HTTPException(401)`` (or 403) for callers without the credential,
            e.g. ``api_key(...)``.
        api_counts_timeout: the longest ``timeout`` a caller of the counts route may ask for,
            in seconds.

    Raises:
        ConfigurationError: an option is out of range.
    """

    def __init__(
        self,
        user: Callable[..., Any] | None = None,
        *,
        path: str = "/ws",
        listeners: Iterable[type[ChannelListener] | type[SocketListener]] = (),
        discover: str | Sequence[str] = (),
        middleware: Sequence[Middleware | type[Middleware]] = (),
        container: injector.Injector | None = None,
        broker: Broker | str | None = None,
        limits: Limits | None = None,
        enabled: bool = True,
        allow_anonymous: bool = True,
        user_id: Callable[[Any], object] | None = None,
        extensions: Sequence[ConnectionExtension] = (),
        asyncapi: bool = True,
        asyncapi_url: str | None = None,
        info_guard: Callable[..., Any] | None = None,
        presence_timeout: float = 30.0,
        idempotency_window: float = 300.0,
        api_guard: Callable[..., Any] | None = None,
        api_counts_timeout: float = 10.0,
    ) -> None:
        if not presence_timeout > 0:
            raise ConfigurationError("presence_timeout must be a positive number of seconds")
        if not idempotency_window > 0:
            raise ConfigurationError("idempotency_window must be a positive number of seconds")
        self.api_guard = api_guard
        self.api_counts_timeout = api_counts_timeout
        self.user_dependency = user
        self.extensions = list(extensions)
        provided = getattr(user, "connection_extension", None)
        if isinstance(provided, ConnectionExtension) and provided not in self.extensions:
            self.extensions.append(provided)
        self.path = path
        self.enabled = enabled
        self.allow_anonymous = allow_anonymous
        self.serve_asyncapi = asyncapi
        self.asyncapi_server = _asyncapi_server(asyncapi_url, path)
        self._asyncapi: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        self.limits = limits or Limits()
        self.registry = ListenerRegistry()
        self.container = container or injector.Injector()
        self._user_id = user_id
        self.info_guard = info_guard
        self._middleware_spec = tuple(middleware)
        if broker is None:
            broker = os.environ.get(BROKER_URL_ENV)
        self.server = SocketServer(
            broker if isinstance(broker, Broker) else create_broker(broker),
            max_name_length=self.limits.max_name_length,
            presence_timeout=presence_timeout,
            idempotency_window=idempotency_window,
            max_backlog_age=self.limits.max_backlog_age,
        )
        self.container.binder.bind(SocketServer, to=self.server)
        self.container.binder.bind(Channels, to=self)
        self.dispatcher: Dispatcher | None = None
        self.stopping = asyncio.Event()
        """Set when the server begins to stop (new packets are refused from then on)."""
        self._router: APIRouter | None = None
        self.register(*listeners)
        for package in [discover] if isinstance(discover, str) else discover:
            self.registry.discover(package)

    def register(self, *classes: type[ChannelListener] | type[SocketListener]) -> None:
        """Register listener classes; must be called before the server starts.

        Raises:
            ConfigurationError: a class is undecorated, duplicated or ambiguous.
        """
        if self.dispatcher is not None:
            raise ConfigurationError("listeners must be registered before the server starts")
        for cls in classes:
            self.registry.add(cls)
        self._asyncapi.clear()

    def asyncapi(
        self,
        *,
        title: str = "fastapi_channels",
        version: str = "0.1.0",
        description: str | None = None,
        host: str | None = None,
        protocol: str = "ws",
        pathname: str | None = None,
    ) -> dict[str, Any]:
        """The AsyncAPI 3.0 document of every registered channel, event and data type.

        Works before the server starts (e.g. to write the document to a file). The document is
        built once per ``(title, version, description)`` and cached; ``servers`` is added per
        call when ``host`` is given.

        Args:
            title: ``info.title``.
            version: ``info.version``.
            description: ``info.description``.
            host: the host (and port) clients connect to; omitted from the document if None.
            protocol: ``ws`` or ``wss``.
            pathname: the websocket endpoint's path (``path`` by default).

        Raises:
            ConfigurationError: a handler's signature cannot be satisfied.
        """
        from fastapi_channels.app.asyncapi import asyncapi_document

        key = (title, version, description)
        document = self._asyncapi.get(key)
        if document is None:
            document = asyncapi_document(
                self.registry, title=title, version=version, description=description
            )
            self._asyncapi[key] = document
        if host is None:
            return dict(document)
        server = {"host": host, "protocol": protocol, "pathname": pathname or self.path}
        head = {"asyncapi": document["asyncapi"], "info": document["info"]}
        return {**head, "servers": {"main": server}, **document}

    def served_asyncapi(self, title: str, version: str, description: str | None) -> dict[str, Any]:
        """The document served at ``{path}/asyncapi.json``: `servers` only from ``asyncapi_url``."""
        if self.asyncapi_server is None:
            return self.asyncapi(title=title, version=version, description=description)
        protocol, host, pathname = self.asyncapi_server
        return self.asyncapi(
            title=title,
            version=version,
            description=description,
            host=host,
            protocol=protocol,
            pathname=pathname,
        )

    @property
    def router(self) -> APIRouter:
        """The router to include: the websocket endpoint and the lifespan that runs the server."""
        if self._router is None:
            from fastapi_channels.edge.router import build_router

            self._router = build_router(self)
        return self._router

    @property
    def running(self) -> bool:
        """Whether the server has started and not stopped."""
        return self.dispatcher is not None

    def user_key(self, user: Any) -> str | None:
        """The key a user's connections are filed under; ``None`` for anonymous.

        Raises:
            ConfigurationError: no id can be found for ``user``; pass ``user_id=``.
        """
        if user is None:
            return None
        if self._user_id is not None:
            return str(self._user_id(user))
        if type(user) is dict:  # decoded JWT claims, most often: no attribute to look for
            found = user.get("id", user.get("sub"))
            if found is not None:
                return str(found)
        if isinstance(user, SocketUserMixin):
            return str(user.socket_user_id())
        found = getattr(user, "id", None)
        if found is None and isinstance(user, Mapping):
            found = user.get("id", user.get("sub"))
        if found is None and isinstance(user, str | int):
            found = user
        if found is None:
            raise ConfigurationError(
                f"cannot tell the id of a {type(user).__name__} user: pass user_id= to Channels"
            )
        return str(found)

    async def __aenter__(self) -> Channels:
        """Start the broker and build every listener; usable without an app in tests.

        Raises:
            ConfigurationError: a listener or middleware cannot be built by the container, or
                a listener declares presence or history and the broker does not support it.
        """
        if self.dispatcher is not None:
            raise ConfigurationError("this Channels is already running")
        broker = self.server.broker
        needs = [
            (self.registry.declares_history, HistoryStore, "history"),
            (self.registry.declares_history_bound, BoundedHistoryStore, "History.max_channels"),
            (self.registry.declares_presence, PresenceStore, "presence"),
        ]
        for declared, store, feature in needs:
            if declared and not isinstance(broker, store):
                raise ConfigurationError(
                    f"a channel listener declares {feature}, which the {broker.name} broker "
                    f"does not keep (it is not a {store.__name__})"
                )
        middleware = [
            build(self.container, m) if isinstance(m, type) else m for m in self._middleware_spec
        ]
        self.registry.start(self.container, self.server, middleware)
        self.server.bind(self.registry.specs)
        await self.server.start()
        if self.api_guard is not None:
            await self.server.cluster.start()
        self.dispatcher = Dispatcher(
            self.server, self.registry, self.limits, middleware, self.extensions
        )
        self.stopping.clear()
        di.activate(self.container)
        logger.info("fastapi_channels started on %s", self.path)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Disconnect every connection (close 1012) and stop the broker."""
        self.stopping.set()
        di.deactivate(self.container)
        dispatcher, self.dispatcher = self.dispatcher, None
        if dispatcher is not None:
            await dispatcher.drain(self.limits.shutdown_timeout)
        await self.server.stop(
            timeout=self.limits.close_timeout, spread=self.limits.reconnect_spread
        )
        logger.info("fastapi_channels stopped")


def _asyncapi_server(url: str | None, path: str) -> tuple[str, str, str] | None:
    """``asyncapi_url`` as (protocol, host, pathname), checked; None when not given."""
    if url is None:
        return None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigurationError(
            f"asyncapi_url must be a ws:// or wss:// URL with a host, not {url!r}"
        )
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigurationError(f"asyncapi_url must hold no user, query or fragment: {url!r}")
    return parts.scheme, parts.netloc, parts.path or path
