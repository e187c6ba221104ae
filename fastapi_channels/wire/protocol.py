"""The wire format: Envuso's JSON packets, decoded once at the edge into immutable values.

Every frame is a UTF-8 text frame holding one JSON object: ``{"event": str, "data": any}`` for a
plain event, plus ``"channel": str`` for a channel event. A client packet may also carry an
``"id"`` (a string or an integer): the server then answers it exactly once with a
``channels:reply`` packet carrying the same ``id``, and a ``"key"`` (an idempotency key: a
handler's broadcasts of that packet are delivered once however often it is sent). Nothing in here
knows about sockets, servers or FastAPI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from pydantic_core import from_json, to_json

from fastapi_channels.wire.errors import ErrorCode, ProtocolError

__all__ = [
    "AUTHENTICATE",
    "AUTHENTICATE_RESPONSE",
    "BATCH",
    "CHANNEL_NAME_RE",
    "DISCONNECT",
    "ERROR",
    "JOIN",
    "LEAVE",
    "MAX_ID_LENGTH",
    "MAX_KEY_LENGTH",
    "PONG",
    "PRESENCE",
    "READY",
    "REPLY",
    "RESERVED_EVENTS",
    "SUBSCRIBED",
    "SUBSCRIBE_REQUEST",
    "SUBSCRIBE_RESPONSE",
    "UNSUBSCRIBED",
    "UNSUBSCRIBE_REQUEST",
    "SocketPacket",
    "decode_packet",
    "encode",
    "encode_error",
    "encode_reply",
    "encode_reply_error",
    "peek_id",
    "validate_channel_name",
    "validate_event_name",
    "validate_key",
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
AUTHENTICATE: Final = "channels:authenticate"
"""Client → server: renew the connection's token in-band, ``data: {"token": <jwt>}``."""
AUTHENTICATE_RESPONSE: Final = "channels:authenticate-response"
"""Server → client: ``data: {"successful": <bool>, "expires_at"?: <number|null>,
"reason"?: <string>}``."""
REPLY: Final = "channels:reply"
"""Our reply packet's event name: the answer to a client packet that carried an ``id``."""
PRESENCE: Final = "channels:presence"
"""Server → client, after subscribing to a presence channel: ``data: {"channel", "members"}``."""
JOIN: Final = "channels:join"
"""Server → client: a member joined a presence channel, ``data: {"channel", "member"}``."""
LEAVE: Final = "channels:leave"
"""Server → client: a member left a presence channel, ``data: {"channel", "member"}``."""
BATCH: Final = "channels:batch"
"""Our batching option: a client asks for it, the server answers with the same event."""
SUBSCRIBED: Final = "channels:subscribed"
"""Server → client: the server subscribed the connection, ``data: {"channel", "position"?}``."""
UNSUBSCRIBED: Final = "channels:unsubscribed"
"""Server → client: the server unsubscribed the connection, ``data: {"channel"}``."""

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
        AUTHENTICATE,
        AUTHENTICATE_RESPONSE,
        REPLY,
        PRESENCE,
        JOIN,
        LEAVE,
        BATCH,
        SUBSCRIBED,
        UNSUBSCRIBED,
    }
)
"""Event names no listener may handle."""

_INVISIBLE: Final = "\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
"""Invisible format characters: zero-width ones, bidi marks, embeddings, overrides, isolates."""
CHANNEL_NAME_RE: Final = re.compile(f"[^\\s\\x00-\\x1f\\x7f-\\x9f*{_INVISIBLE}]+")
"""A concrete channel name: no whitespace, control or invisible format characters, no ``*``."""
_EVENT_NAME_RE: Final = re.compile(f"[^\\x00-\\x1f\\x7f-\\x9f{_INVISIBLE}]+")
_KEY_RE: Final = re.compile(f"[^\\s\\x00-\\x1f\\x7f-\\x9f{_INVISIBLE}]+")
MAX_ID_LENGTH: Final = 64
"""The longest string ``id`` a client may put on a packet (it is echoed in the reply)."""
MAX_KEY_LENGTH: Final = 64
"""The longest idempotency ``key`` a client may put on a packet."""
_MAX_INT_ID: Final = 2**53 - 1
"""Integer ids stay within what a JavaScript number holds exactly."""

PacketId = str | int


@dataclass(frozen=True, slots=True)
class SocketPacket:
    """One decoded packet.

    Attributes:
        event: the event name.
        data: the JSON payload; ``None`` when the client sent none.
        channel: the concrete channel name for a channel event, else ``None``.
        id: the request id the client put on the packet, else ``None``; when set, the server
            answers the packet with exactly one ``channels:reply`` carrying it.
        key: the idempotency key the client put on the packet, else ``None``; the broadcasts a
            handler makes for the packet are deduplicated by it (see ``SocketServer.broadcast``).
    """

    event: str
    data: Any = None
    channel: str | None = None
    id: PacketId | None = None
    key: str | None = None


def validate_channel_name(name: object, max_length: int) -> str:
    """Return ``name`` if it is a valid concrete channel name, else raise ``ProtocolError``."""
    if not isinstance(name, str) or not name:
        raise ProtocolError(ErrorCode.INVALID_PACKET, "channel must be a non-empty string")
    if len(name) > max_length:
        raise ProtocolError(ErrorCode.INVALID_PACKET, f"channel is longer than {max_length}")
    if CHANNEL_NAME_RE.fullmatch(name) is None:
        raise ProtocolError(
            ErrorCode.INVALID_PACKET,
            "channel may not contain whitespace, control or invisible characters, or '*'",
        )
    return name


def validate_event_name(event: object, max_length: int) -> str:
    """Return ``event`` if it is a valid event name, else raise ``ProtocolError``."""
    if not isinstance(event, str) or not event:
        raise ProtocolError(ErrorCode.INVALID_PACKET, "event must be a non-empty string")
    if len(event) > max_length:
        raise ProtocolError(ErrorCode.INVALID_PACKET, f"event is longer than {max_length}")
    if _EVENT_NAME_RE.fullmatch(event) is None:
        raise ProtocolError(
            ErrorCode.INVALID_PACKET, "event may not contain control or invisible characters"
        )
    return event


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid idempotency key, else raise ``ProtocolError``.

    A key is a string of 1 to `MAX_KEY_LENGTH` characters without whitespace, control or
    invisible characters (the same characters as a channel name, ``*`` included).
    """
    if (
        not isinstance(key, str)
        or not 0 < len(key) <= MAX_KEY_LENGTH
        or _KEY_RE.fullmatch(key) is None
    ):
        raise ProtocolError(
            ErrorCode.INVALID_PACKET,
            f"key must be a string of 1 to {MAX_KEY_LENGTH} characters without whitespace",
        )
    return key


def decode_packet(text: str, max_name_length: int = 200) -> SocketPacket:
    """Decode one text frame into a `SocketPacket`.

    Args:
        text: the frame's text.
        max_name_length: the longest event or channel name accepted.

    Raises:
        ProtocolError: the frame is not a JSON object, ``id`` is present but neither a string of
            1 to ``MAX_ID_LENGTH`` characters nor an integer within ±(2**53 - 1), ``event`` is
            missing, not a string, empty, too long or holds control characters, or ``channel``
            is present but invalid, or ``key`` is present but not a valid key. When the
            packet's ``id`` was valid, the error carries it in ``packet_id``.
    """
    try:
        raw = from_json(text, allow_inf_nan=False)
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID_FRAME, "frame is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.INVALID_FRAME, "frame must hold a JSON object")
    packet_id = _packet_id(raw.get("id"))
    try:
        event = validate_event_name(raw.get("event"), max_name_length)
        channel = raw.get("channel")
        if channel is not None:
            channel = validate_channel_name(channel, max_name_length)
        key = raw.get("key")
        if key is not None:
            key = validate_key(key)
    except ProtocolError as exc:
        exc.packet_id = packet_id
        raise
    return SocketPacket(event=event, data=raw.get("data"), channel=channel, id=packet_id, key=key)


def peek_id(text: str) -> PacketId | None:
    """The valid ``id`` of a frame that is not otherwise decoded (a dropped one), else None."""
    try:
        raw = from_json(text)
        return _packet_id(raw.get("id")) if isinstance(raw, dict) else None
    except (ValueError, ProtocolError):
        return None


def _packet_id(value: object) -> PacketId | None:
    if value is None:
        return None
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _MAX_INT_ID:
        return value
    raise ProtocolError(
        ErrorCode.INVALID_PACKET,
        f"id must be a string of 1 to {MAX_ID_LENGTH} characters or an integer within ±2**53",
    )


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


def encode_error(
    code: ErrorCode,
    message: str,
    packet: SocketPacket | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> bytes:
    """Serialise a ``channels:error`` packet; the offending event and channel go inside ``data``.

    The channel is never put at the top level: the Envuso client throws on a channel event for a
    channel it has no listener for. ``errors`` (validation problems) is added for
    ``invalid-data`` only.
    """
    data: dict[str, Any] = {"code": code.value, "message": message}
    if packet is not None:
        data["event"] = packet.event
        if packet.channel is not None:
            data["channel"] = packet.channel
    if errors is not None:
        data["errors"] = errors
    return encode(ERROR, data)


def encode_reply(packet_id: PacketId, data: Any) -> bytes:
    """Serialise a successful ``channels:reply``: ``{"event", "id", "data"}``.

    A plain event, never with a top-level ``channel``: clients that know nothing of replies
    ignore it.

    Raises:
        pydantic_core.PydanticSerializationError: ``data`` cannot be serialised.
    """
    return to_json({"event": REPLY, "id": packet_id, "data": data})


def encode_reply_error(
    packet_id: PacketId,
    code: ErrorCode,
    message: str,
    errors: list[dict[str, Any]] | None = None,
) -> bytes:
    """Serialise a failed ``channels:reply``: ``{"event", "id", "error": {"code", "message"}}``.

    ``errors`` (validation problems) is added inside ``error`` for ``invalid-data`` only.
    """
    error: dict[str, Any] = {"code": code.value, "message": message}
    if errors is not None:
        error["errors"] = errors
    return to_json({"event": REPLY, "id": packet_id, "error": error})
