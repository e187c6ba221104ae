"""Broker topics: how channels, users and presence announcements are named between processes.

Channel ``X`` travels on topic ``c:X``. Its payload is the encoded frame itself (a JSON object,
so its first byte is ``{``), or, for a broadcast that excludes one connection, `EXCLUDING`,
that connection's id, a newline and the frame: the excluded id travels with the message to
every process, and a stored message keeps it in the history (`split_excluded` removes it).
User ``U``'s messages travel on ``u:U``, whose payload starts with one byte saying what it is
(`USER_EVENT`, `USER_CHANNEL_EVENT`, `USER_DISCONNECT`, `USER_SUBSCRIBE`, `USER_UNSUBSCRIBE`).
Presence announcements of channel ``X`` travel on ``p:X`` (see `fastapi_channels.core.presence`).
Messages between the processes themselves (cluster-wide counts) travel on topics starting with
``x:`` (see `fastapi_channels.core.cluster`).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CHANNEL",
    "CONTROL",
    "EXCLUDING",
    "USER",
    "USER_CHANNEL_EVENT",
    "USER_DISCONNECT",
    "USER_EVENT",
    "USER_SUBSCRIBE",
    "USER_UNSUBSCRIBE",
    "excluding",
    "split_excluded",
]

CHANNEL: Final = "c:"
"""The prefix of a channel's topic."""
CONTROL: Final = "x:"
"""The prefix of the topics processes talk to each other on."""
USER: Final = "u:"
"""The prefix of a user's topic."""
USER_EVENT: Final = b"e"
"""A plain event for every connection of the user; the frame follows."""
USER_CHANNEL_EVENT: Final = b"c"
"""A channel event for the user's connections subscribed to it: ``channel\\nframe``."""
USER_DISCONNECT: Final = b"x"
"""Close every connection of the user; the reason follows."""
USER_SUBSCRIBE: Final = b"s"
"""Subscribe the user's connections (those that understand it) to the channel that follows."""
USER_UNSUBSCRIBE: Final = b"r"
"""Unsubscribe every connection of the user from the channel that follows."""
EXCLUDING: Final = b"-"
"""The first byte of a channel payload that names a connection to leave out: ``-id\\nframe``."""


def excluding(connection_id: str, frame: bytes) -> bytes:
    """A channel payload delivering ``frame`` to every subscriber but ``connection_id``.

    Raises:
        ValueError: the id holds a newline (connection ids are hex).
    """
    if "\n" in connection_id:
        raise ValueError("a connection id cannot hold a newline")
    return EXCLUDING + connection_id.encode() + b"\n" + frame


def split_excluded(data: bytes) -> tuple[str | None, bytes]:
    """Split a channel payload into the excluded connection's id (None: none) and the frame."""
    if data[:1] != EXCLUDING:
        return None, data
    head, _, frame = data.partition(b"\n")
    return head[1:].decode(), frame
