"""An asyncio client of fastapi_channels servers, on the ``websockets`` library.

Install it with the ``client`` extra (``pip install "fastapi-ws-channels[client]"``):

```python
from fastapi_channels.client import ChannelsClient

async with ChannelsClient("ws://127.0.0.1:8000/ws", token=get_token) as client:
    chat = await client.subscribe("chat:1")
    chat.on("message", lambda packet: print(packet.data))
    await chat.emit("message", {"text": "hi"})
    async for packet in chat:
        ...
```
"""

from __future__ import annotations

try:
    import websockets  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fastapi_channels.client needs the websockets library: "
        'pip install "fastapi-ws-channels[client]"'
    ) from exc

from fastapi_channels.client.backoff import STOP_CODES, Backoff, should_reconnect
from fastapi_channels.client.channel import Channel
from fastapi_channels.client.connection import ChannelsClient, ClientState
from fastapi_channels.client.errors import (
    ConnectFailed,
    ConnectionClosed,
    Refused,
    RenewalError,
    ReplyError,
    SubscriptionDenied,
)
from fastapi_channels.client.packets import Packet, PacketStream
from fastapi_channels.wire.history import Position

__all__ = [
    "STOP_CODES",
    "Backoff",
    "Channel",
    "ChannelsClient",
    "ClientState",
    "ConnectFailed",
    "ConnectionClosed",
    "Packet",
    "PacketStream",
    "Position",
    "Refused",
    "RenewalError",
    "ReplyError",
    "SubscriptionDenied",
    "should_reconnect",
]
