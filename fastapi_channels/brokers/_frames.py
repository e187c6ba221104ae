"""The framing the Redis broker puts around messages: several messages in one Redis payload.

A payload is a fixed header followed by one or more length-prefixed messages:

```text
+---------+-------------+------------+-----------+------------+-----------+-----
| version | origin      | length (1) | message 1 | length (2) | message 2 | ...
| 1 byte  | 8 bytes     | u32, BE    | bytes     | u32, BE    | bytes     |
+---------+-------------+------------+-----------+------------+-----------+-----
```

``origin`` identifies the publishing broker, so a process can skip its own messages (it has
already delivered them locally). Decoding costs one ``struct`` unpack and one slice per message;
the messages themselves are never inspected.

A second, *scripted* framing carries one message published by a Redis Lua script (a stored
message, a presence announcement), which every process delivers, the publishing one too:

```text
+---------+--------------------+---------+---------+
| version | header             | newline | message |
| 1 byte  | ASCII, may be empty| 1 byte  | bytes   |
+---------+--------------------+---------+---------+
```

The header of a stored message is its position, ``<offset>:<epoch>``; an announcement has none.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Final

__all__ = [
    "ORIGIN_SIZE",
    "SCRIPTED",
    "pack",
    "pack_batches",
    "pack_scripted",
    "unpack",
    "unpack_scripted",
]

VERSION: Final = 1
SCRIPTED: Final = 2
_SCRIPTED_BYTE: Final = bytes([SCRIPTED])
ORIGIN_SIZE: Final = 8
_HEADER: Final = struct.Struct(">B8s")
_LENGTH: Final = struct.Struct(">I")
_MAX_LENGTH: Final = 0xFFFFFFFF


def pack(origin: bytes, messages: Iterable[bytes]) -> bytes:
    """Frame ``messages`` from ``origin`` into one payload.

    Raises:
        ValueError: a message is 4 GiB or larger, or ``origin`` is not 8 bytes.
    """
    if len(origin) != ORIGIN_SIZE:
        raise ValueError(f"origin must be {ORIGIN_SIZE} bytes")
    parts = [_HEADER.pack(VERSION, origin)]
    for message in messages:
        if len(message) > _MAX_LENGTH:
            raise ValueError("a message must be shorter than 4 GiB")
        parts.append(_LENGTH.pack(len(message)))
        parts.append(message)
    return b"".join(parts)


def pack_batches(origin: bytes, messages: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
    """Frame ``messages`` into as few payloads as fit in ``max_bytes`` each, keeping their order.

    A single message larger than ``max_bytes`` travels alone in its own payload.
    """
    chunk: list[bytes] = []
    size = _HEADER.size
    for message in messages:
        added = _LENGTH.size + len(message)
        if chunk and size + added > max_bytes:
            yield pack(origin, chunk)
            chunk, size = [], _HEADER.size
        chunk.append(message)
        size += added
    if chunk:
        yield pack(origin, chunk)


def unpack(payload: bytes) -> tuple[bytes, list[bytes]]:
    """Split a payload into its origin and its messages, in order.

    Raises:
        ValueError: the payload is not one this module packed (wrong version, truncated).
    """
    end = len(payload)
    if end < _HEADER.size:
        raise ValueError("payload shorter than its header")
    version, origin = _HEADER.unpack_from(payload)
    if version != VERSION:
        raise ValueError(f"unknown framing version {version}")
    messages: list[bytes] = []
    offset = _HEADER.size
    while offset < end:
        if offset + _LENGTH.size > end:
            raise ValueError("truncated length prefix")
        (length,) = _LENGTH.unpack_from(payload, offset)
        offset += _LENGTH.size
        if offset + length > end:
            raise ValueError("truncated message")
        messages.append(payload[offset : offset + length])
        offset += length
    return origin, messages


def pack_scripted(header: bytes, message: bytes) -> bytes:
    """Frame one message in the scripted framing (the Lua scripts build the same bytes)."""
    return _SCRIPTED_BYTE + header + b"\n" + message


def unpack_scripted(payload: bytes) -> tuple[bytes, bytes]:
    """Split a scripted payload into its header and its message.

    Raises:
        ValueError: the payload is not in the scripted framing.
    """
    if payload[:1] != _SCRIPTED_BYTE:
        raise ValueError("not a scripted payload")
    end = payload.find(b"\n", 1)
    if end < 0:
        raise ValueError("scripted payload without a header line")
    return payload[1:end], payload[end + 1 :]
