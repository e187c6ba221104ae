"""fastapi_channels: websocket channels for FastAPI, speaking the Envuso packet protocol."""

from fastapi_channels.brokers import Broker, MemoryBroker
from fastapi_channels.channels import Channels
from fastapi_channels.connection import OverflowPolicy, SocketConnection
from fastapi_channels.di import Inject
from fastapi_channels.errors import (
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
from fastapi_channels.history import History, Position
from fastapi_channels.limits import Limits
from fastapi_channels.listeners import ChannelListener, SocketListener, channel, listener
from fastapi_channels.middleware import Middleware, MiddlewareContext
from fastapi_channels.outgoing import DROP
from fastapi_channels.protocol import SocketPacket
from fastapi_channels.server import SocketServer
from fastapi_channels.users import SocketUserMixin

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
