"""Broker topics: how channels, users and presence announcements are named between processes.

Channel ``X`` travels on topic ``c:X``; user ``U``'s messages on ``u:U``, whose payload starts
with one byte saying what it is (`USER_EVENT`, `USER_CHANNEL_EVENT`, `USER_DISCONNECT`).
Presence announcements of channel ``X`` travel on ``p:X`` (see `fastapi_channels.core.presence`).
Messages between the processes themselves (cluster-wide counts) travel on topics starting with
``x:`` (see `fastapi_channels.core.cluster`).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CHANNEL",
    "CONTROL",
    "USER",
    "USER_CHANNEL_EVENT",
    "USER_DISCONNECT",
    "USER_EVENT",
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
