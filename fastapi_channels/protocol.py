"""The wire format: Envuso's JSON packets, decoded once at the edge into immutable values.

Every frame is a UTF-8 text frame holding one JSON object: ``{"event": str, "data": any}`` for a
plain event, plus ``"channel": str`` for a channel event. Nothing in here knows about sockets,
servers or FastAPI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from pydantic_core import from_json, to_json

from fastapi_channels.errors import ErrorCode, ProtocolError

__all__ = [
    "BATCH",
    "CHANNEL_NAME_RE",
    "DISCONNECT",
    "ERROR",
    "PONG",
    "READY",
    "RESERVED_EVENTS",
    "SUBSCRIBE_REQUEST",
    "SUBSCRIBE_RESPONSE",
    "UNSUBSCRIBE_REQUEST",
    "SocketPacket",
    "decode_packet",
    "encode",
    "encode_error",
    "validate_channel_name",
]

READY: Final = "ready"
DISCONNECT: Final = "disconnect"
SUBSCRIBE_REQUEST: Final = "subscribe-channel-request"
SUBSCRIBE_RESPONSE: Final = "subscribe-channel-response"
UNSUBSCRIBE_REQUEST: Final = "unsubscribe-channel-request"
PING: Final = "ping"
PONG: Final = "pong"
ERROR: Final = "channels:error"
"""Our error packet's event name; the Envuso client ignores plain events it does not know."""
BATCH: Final = "channels:batch"
"""Our batching option: a client asks for it, the server answers with the same event."""

RESERVED_EVENTS: Final = frozenset(
    {
        READY,
        DISCONNECT,
        SUBSCRIBE_REQUEST,
        SUBSCRIBE_RESPONSE,
        UNSUBSCRIBE_REQUEST,
        PING,
        PONG,
        ERROR,
        BATCH,
    }
)
"""Event names no listener may handle."""

CHANNEL_NAME_RE: Final = re.compile(r"[^\s\x00-\x1f\x7f*]+")
"""A concrete channel name: no whitespace, control characters or ``*``."""
_EVENT_NAME_RE: Final = re.compile(r"[^\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class SocketPacket:
    """One decoded packet.

    Attributes:
        event: the event name.
        data: the JSON payload; ``None`` when the client sent none.
        channel: the concrete channel name for a channel event, else ``None``.
    """

    event: str
    data: Any = None
    channel: str | None = None


def validate_channel_name(name: object, max_length: int) -> str:
    """Return ``name`` if it is a valid concrete channel name, else raise ``ProtocolError``."""
    if not isinstance(name, str) or not name:
        raise ProtocolError(ErrorCode.INVALID_PACKET, "channel must be a non-empty string")
    if len(name) > max_length:
        raise ProtocolError(ErrorCode.INVALID_PACKET, f"channel is longer than {max_length}")
    if CHANNEL_NAME_RE.fullmatch(name) is None:
        raise ProtocolError(
            ErrorCode.INVALID_PACKET,
            "channel may not contain whitespace, control characters or '*'",
        )
    return name


def decode_packet(text: str, max_name_length: int = 200) -> SocketPacket:
    """Decode one text frame into a :class:`SocketPacket`.

    Args:
        text: the frame's text.
        max_name_length: the longest event or channel name accepted.

    Raises:
        ProtocolError: the frame is not a JSON object, ``event`` is missing, not a string, empty,
            too long or holds control characters, or ``channel`` is present but invalid.
    """
    try:
        raw = from_json(text)
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID_FRAME, "frame is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.INVALID_FRAME, "frame must hold a JSON object")
    event = raw.get("event")
    if not isinstance(event, str) or not event:
        raise ProtocolError(ErrorCode.INVALID_PACKET, "event must be a non-empty string")
    if len(event) > max_name_length:
        raise ProtocolError(ErrorCode.INVALID_PACKET, f"event is longer than {max_name_length}")
    if _EVENT_NAME_RE.fullmatch(event) is None:
        raise ProtocolError(ErrorCode.INVALID_PACKET, "event may not contain control characters")
    channel = raw.get("channel")
    if channel is not None:
        channel = validate_channel_name(channel, max_name_length)
    return SocketPacket(event=event, data=raw.get("data"), channel=channel)


def encode(event: str, data: Any = None, channel: str | None = None) -> bytes:
    """Serialise one packet to UTF-8 JSON bytes.

    ``data`` may hold anything pydantic can serialise (dicts, lists, pydantic models,
    dataclasses, datetimes, UUIDs).

    Raises:
        pydantic_core.PydanticSerializationError: ``data`` cannot be serialised.
    """
    if channel is None:
        return to_json({"event": event, "data": data})
    return to_json({"event": event, "channel": channel, "data": data})


def encode_error(code: ErrorCode, message: str, packet: SocketPacket | None = None) -> bytes:
    """Serialise a ``channels:error`` packet; the offending event and channel go inside ``data``.

    The channel is never put at the top level: the Envuso client throws on a channel event for a
    channel it has no listener for.
    """
    data: dict[str, Any] = {"code": code.value, "message": message}
    if packet is not None:
        data["event"] = packet.event
        if packet.channel is not None:
            data["channel"] = packet.channel
    return encode(ERROR, data)
