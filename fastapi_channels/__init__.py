"""fastapi_channels: websocket channels for FastAPI, speaking the Envuso packet protocol."""

from fastapi_channels.app.listeners import ChannelListener, SocketListener, channel, listener
from fastapi_channels.app.middleware import Middleware, MiddlewareContext
from fastapi_channels.brokers import Broker, MemoryBroker
from fastapi_channels.core.connection import OverflowPolicy, SocketConnection
from fastapi_channels.core.outgoing import DROP
from fastapi_channels.core.server import SocketServer
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
    InvalidChannel,
    InvalidData,
    ProtocolError,
    Reject,
    ReplyError,
)
from fastapi_channels.wire.history import History, Position
from fastapi_channels.wire.limits import Limits
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
    "Inject",
    "InvalidChannel",
    "InvalidData",
    "Limits",
    "MemoryBroker",
    "Middleware",
    "MiddlewareContext",
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
    "channel",
    "listener",
]
