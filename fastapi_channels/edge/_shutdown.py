"""Taking over uvicorn's shutdown of a websocket, so a restart ends it our way.

On SIGTERM uvicorn stops listening, then calls each connection protocol's ``shutdown()``, which
for a websocket sends a close 1012 at once and closes the transport; only after every
connection is gone does it run the lifespan shutdown (where ``Channels`` would stop). So
without this hook, a restart under uvicorn never sends our ``disconnect`` with its
``reconnect_after``, and Envuso's client, which gives up after any close frame, never comes
back.

`intercept_shutdown` replaces ``shutdown`` on one connection's protocol object (an instance
attribute; the class is untouched) with a call to the router's restart function
(``SocketServer.end_for_restart`` with the configured spread): it tells our clients when to
come back, or drops Envuso's connections at random moments within the spread. uvicorn then
waits for the connections to end as it always does, up to ``--timeout-graceful-shutdown``.
Once the connection is closing or closed the restart function declines and uvicorn's own
``shutdown`` runs, so a protocol is never left open.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from starlette.types import Send

from fastapi_channels.core.connection import SocketConnection
from fastapi_channels.edge._direct import _unwrap

__all__ = ["Restart", "intercept_shutdown"]

Restart = Callable[[SocketConnection], object]
"""Ends a connection for a restart; returns a false value when it did nothing (closed)."""


def intercept_shutdown(send: Send, connection: SocketConnection, restart: Restart) -> bool:
    """Make uvicorn's shutdown of the socket behind ``send`` call ``restart(connection)``.

    Returns whether it did: only under uvicorn (any websocket implementation), and only when
    ``send`` is the protocol's own or wrapped by Starlette's transparent wrappers. Never raises.
    """
    protocol: Any = getattr(_unwrap(send), "__self__", None)
    if not type(protocol).__module__.startswith("uvicorn.protocols.websockets."):
        return False
    if not callable(getattr(type(protocol), "shutdown", None)):
        return False
    try:
        protocol.shutdown = functools.partial(_shutdown, restart, connection, protocol)
    except AttributeError:  # a protocol with __slots__: keep uvicorn's behaviour
        return False
    return True


def _shutdown(restart: Restart, connection: SocketConnection, protocol: Any) -> None:
    if not restart(connection):
        type(protocol).shutdown(protocol)
