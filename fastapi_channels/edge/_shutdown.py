"""Taking over uvicorn's shutdown of a websocket, so a restart ends it our way.

On SIGTERM uvicorn stops listening, then calls each connection protocol's ``shutdown()``, which
for a websocket sends a close 1012 at once and closes the transport; only after every
connection is gone does it run the lifespan shutdown (where ``Channels`` would stop). So
without this hook, a restart under uvicorn never sends our ``disconnect`` with its
``reconnect_after``, and Envuso's client, which gives up after any close frame, never comes
back.

`intercept_shutdown` replaces ``shutdown`` once per process on the protocol's class (any of
uvicorn's websocket implementations) with one that asks the connection's `Hooks` first
(`Hooks.restart`: ``SocketServer.end_for_restart`` with the configured spread): it tells our
clients when to come back, or drops Envuso's connections at random moments within the spread.
uvicorn then waits for the connections to end as it always does, up to
``--timeout-graceful-shutdown``. Once the connection is closing or closed the hook declines and
uvicorn's own ``shutdown`` runs, so a protocol is never left open; so it does for protocols
without hooks (sockets of other routes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi_channels.core.connection import SocketConnection
from fastapi_channels.edge._uvicorn import hooks_of

__all__ = ["Restart", "intercept_shutdown"]

Restart = Callable[[SocketConnection], object]
"""Ends a connection for a restart; returns a false value when it did nothing (closed)."""

_SHUTDOWN_HOOK = "_fastapi_channels_shutdown_hook"
"""Marks a protocol class (in its own ``__dict__``) whose ``shutdown`` was replaced, or not."""


def intercept_shutdown(protocol: Any) -> bool:
    """Make uvicorn's shutdown of ``protocol`` call its connection's `Hooks.restart` first.

    ``protocol`` is a uvicorn websocket protocol (see `_uvicorn.protocol_behind`). Installed
    once per protocol class; a connection then only leaves its hooks in the protocol's scope.
    Returns whether the class's shutdown is intercepted. Never raises.
    """
    cls = type(protocol)
    installed = cls.__dict__.get(_SHUTDOWN_HOOK)
    if installed is None:
        original: Any = getattr(cls, "shutdown", None)
        installed = callable(original)
        if installed:
            cls.shutdown = _intercepted(original)
        setattr(cls, _SHUTDOWN_HOOK, installed)
    return installed is True


def _intercepted(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def shutdown(self: Any) -> None:
        hooks = hooks_of(self)
        if hooks is None or not hooks.restart():
            original(self)

    shutdown.__qualname__ = f"{original.__qualname__} (intercepted by fastapi_channels)"
    return shutdown
