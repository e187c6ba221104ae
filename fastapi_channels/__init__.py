"""fastapi_channels: websocket channels for FastAPI, speaking the Envuso packet protocol.

The public names are loaded on first use (PEP 562), so importing a part of the package, such
as the Python client (`fastapi_channels.client`), loads that part alone and never the server,
FastAPI or Starlette. ``from fastapi_channels import Channels`` imports the module that defines
``Channels`` at that moment; a name that is not public raises `AttributeError` (and the
``from`` import an `ImportError`), as for any module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi_channels.app.listeners import ChannelListener, SocketListener, channel, listener
    from fastapi_channels.app.middleware import Middleware, MiddlewareContext
    from fastapi_channels.brokers import Broker, MemoryBroker
    from fastapi_channels.core.connection import SocketConnection
    from fastapi_channels.core.outgoing import DROP
    from fastapi_channels.core.server import SocketServer
    from fastapi_channels.edge.api import api_key
    from fastapi_channels.edge.channels import Channels
    from fastapi_channels.edge.di import Inject
    from fastapi_channels.edge.users import SocketUserMixin
    from fastapi_channels.wire.errors import (
        BrokerError,
        ChannelsError,
        CloseCode,
        ConfigurationError,
        ConnectionClosed,
        ErrorCode,
        HistoryFull,
        InvalidChannel,
        InvalidData,
        OutcomeUnknown,
        ProtocolError,
        Reject,
        ReplyError,
    )
    from fastapi_channels.wire.history import History, Position
    from fastapi_channels.wire.limits import Limits, OverflowPolicy
    from fastapi_channels.wire.protocol import SocketPacket

__all__ = [
    "DROP",
    "Broker",
    "BrokerError",
    "ChannelListener",
    "Channels",
    "ChannelsError",
    "CloseCode",
    "ConfigurationError",
    "ConnectionClosed",
    "ErrorCode",
    "History",
    "HistoryFull",
    "Inject",
    "InvalidChannel",
    "InvalidData",
    "Limits",
    "MemoryBroker",
    "Middleware",
    "MiddlewareContext",
    "OutcomeUnknown",
    "OverflowPolicy",
    "Position",
    "ProtocolError",
    "Reject",
    "ReplyError",
    "SocketConnection",
    "SocketListener",
    "SocketPacket",
    "SocketServer",
    "SocketUserMixin",
    "api_key",
    "channel",
    "listener",
]

_ERRORS = "fastapi_channels.wire.errors"

_SOURCES: dict[str, str] = {
    "ChannelListener": "fastapi_channels.app.listeners",
    "SocketListener": "fastapi_channels.app.listeners",
    "channel": "fastapi_channels.app.listeners",
    "listener": "fastapi_channels.app.listeners",
    "Middleware": "fastapi_channels.app.middleware",
    "MiddlewareContext": "fastapi_channels.app.middleware",
    "Broker": "fastapi_channels.brokers",
    "MemoryBroker": "fastapi_channels.brokers",
    "SocketConnection": "fastapi_channels.core.connection",
    "DROP": "fastapi_channels.core.outgoing",
    "SocketServer": "fastapi_channels.core.server",
    "Channels": "fastapi_channels.edge.channels",
    "api_key": "fastapi_channels.edge.api",
    "Inject": "fastapi_channels.edge.di",
    "SocketUserMixin": "fastapi_channels.edge.users",
    "BrokerError": _ERRORS,
    "ChannelsError": _ERRORS,
    "CloseCode": _ERRORS,
    "ConfigurationError": _ERRORS,
    "ConnectionClosed": _ERRORS,
    "ErrorCode": _ERRORS,
    "HistoryFull": _ERRORS,
    "InvalidChannel": _ERRORS,
    "InvalidData": _ERRORS,
    "OutcomeUnknown": _ERRORS,
    "ProtocolError": _ERRORS,
    "Reject": _ERRORS,
    "ReplyError": _ERRORS,
    "History": "fastapi_channels.wire.history",
    "Position": "fastapi_channels.wire.history",
    "Limits": "fastapi_channels.wire.limits",
    "OverflowPolicy": "fastapi_channels.wire.limits",
    "SocketPacket": "fastapi_channels.wire.protocol",
}
"""Where each public name is defined: the module imported when the name is first used."""


def _load(name: str) -> object:
    """Import the public ``name`` from its module and keep it here, so the next use is direct.

    Raises:
        AttributeError: ``name`` is not a public name of the package.
    """
    try:
        module = _SOURCES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value: object = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if not TYPE_CHECKING:
    # Hidden from type checkers, which see the imports above instead: with a module
    # ``__getattr__`` in view they would accept any misspelt name as ``Any``.
    __getattr__ = _load
