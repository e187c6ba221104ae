"""The bridge between FastAPI and the ``injector`` container.

``Inject(T)`` is a FastAPI dependency typed on ``HTTPConnection``: it works in HTTP and websocket
routes alike and returns what the running ``Channels`` container holds for ``T``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

from fastapi import Depends
from starlette.requests import HTTPConnection

from fastapi_channels.wire.errors import ChannelsError

if TYPE_CHECKING:
    import injector

__all__ = ["Inject", "active_container", "container_for"]

T = TypeVar("T")
_STATE_KEY = "fastapi_channels_container"
_active: list[injector.Injector] = []


def Inject(interface: type[T]) -> T:
    """Declare a route parameter resolved from the channels container.

    Example: ``server: SocketServer = Inject(SocketServer)``.

    Raises:
        ChannelsError: at request time, when no ``Channels`` router has been started.
    """

    def resolve(connection: HTTPConnection) -> T:
        return container_for(connection).get(interface)

    return cast(T, Depends(resolve))


def container_for(connection: HTTPConnection) -> injector.Injector:
    """The container serving ``connection``: its app's, else the active one.

    Raises:
        ChannelsError: no ``Channels`` is running.
    """
    app = connection.scope.get("app")
    container = getattr(app.state, _STATE_KEY, None) if app is not None else None
    return container if container is not None else active_container()


def attach(app: Any, container: injector.Injector) -> None:
    """Make ``container`` the one ``Inject`` uses for ``app``."""
    setattr(app.state, _STATE_KEY, container)


def activate(container: injector.Injector) -> None:
    """Push ``container`` as the process's current one (for code outside any request)."""
    _active.append(container)


def deactivate(container: injector.Injector) -> None:
    """Pop ``container`` from the current ones."""
    if container in _active:
        _active.remove(container)


def active_container() -> injector.Injector:
    """The container of the most recently started ``Channels``.

    Raises:
        ChannelsError: no ``Channels`` is running in this process.
    """
    if not _active:
        raise ChannelsError(
            "fastapi_channels is not running: include channels.router in the app and run its "
            "lifespan, or enter 'async with channels:'"
        )
    return _active[-1]
