"""The part of the Envuso protocol the peer apps speak by hand, so one load client fits all.

Each peer app does what a fastapi_channels connection does before its first broadcast: it takes
the JWT from the subprotocol and echoes it, sends ``ready``, answers a
``subscribe-channel-request`` with a successful ``subscribe-channel-response`` once the
subscription is in place, then delivers channel events. These are the frames and the checks
they share; how a peer subscribes and fans out is its own.
"""

from __future__ import annotations

import json
from typing import Any

import jwt

from bench.common import JWT_ALGORITHM, JWT_SECRET

READY = '{"event":"ready","data":{}}'
_COMPACT = (",", ":")


def user(token: str) -> dict[str, Any] | None:
    """The claims of a valid token (the subprotocol the client offered), else None."""
    try:
        claims: dict[str, Any] = jwt.decode(token, JWT_SECRET, algorithms=[JWT_ALGORITHM])
    except jwt.InvalidTokenError:
        return None
    return claims


def requested_channel(packet: Any) -> str | None:
    """The channel a decoded ``subscribe-channel-request`` asks for; None for any other packet."""
    if not isinstance(packet, dict) or packet.get("event") != "subscribe-channel-request":
        return None
    data = packet.get("data")
    channel = data.get("channel") if isinstance(data, dict) else None
    return channel if isinstance(channel, str) else None


def subscribed(channel: str) -> dict[str, Any]:
    """The answer to a subscribe request that succeeded."""
    return {
        "event": "subscribe-channel-response",
        "data": {"channel": channel, "successful": True},
    }


def channel_event(channel: str, event: str, data: Any) -> dict[str, Any]:
    return {"event": event, "channel": channel, "data": data}


def encode(packet: dict[str, Any]) -> str:
    """One packet as the compact JSON text of a frame."""
    return json.dumps(packet, separators=_COMPACT)
