"""What a client announces at connect: the extensions it understands, in the handshake URL.

Envuso's client sends no announcement and never learns of these extensions, so the server
keeps the Envuso behaviour for it. Our clients add ``channels-features=<name>,<name>`` to the
query string of every connection attempt; the server reads it once, at the handshake, and
ignores names it does not know (a newer client on an older server loses nothing).

* `RECONNECT_ADVICE`: the client reconnects after a close 1012 and waits the ``reconnect_after``
  of the ``disconnect`` packet first. Without it, a restart ends the connection without a
  close frame (the only ending after which Envuso's client reconnects).
* `SERVER_SUBSCRIPTIONS`: the client takes ``channels:subscribed`` as a subscription made for
  it by the server (it adds the channel to its table, and subscribes again after a reconnect).
  Without it, ``SocketServer.subscribe_user`` leaves the connection alone: Envuso's client
  throws on every event of a channel it did not subscribe to itself.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl

__all__ = [
    "FEATURES_PARAMETER",
    "OUR_FEATURES",
    "RECONNECT_ADVICE",
    "SERVER_SUBSCRIPTIONS",
    "parse_features",
]

FEATURES_PARAMETER: Final = "channels-features"
"""The query parameter holding the announcement: feature names separated by commas."""
RECONNECT_ADVICE: Final = "reconnect-advice"
"""The client honours ``reconnect_after`` and reconnects after a close 1012."""
SERVER_SUBSCRIPTIONS: Final = "server-subscriptions"
"""The client understands ``channels:subscribed`` and ``channels:unsubscribed``."""
OUR_FEATURES: Final = f"{RECONNECT_ADVICE},{SERVER_SUBSCRIPTIONS}"
"""The announcement our clients send."""

_MAX_FEATURES: Final = 16
"""Names read at most: an announcement is a few short words, never a payload."""


_NONE: Final[frozenset[str]] = frozenset()
"""The empty announcement, one object for all (an empty ``frozenset`` is not a singleton)."""


def parse_features(query_string: bytes | str) -> frozenset[str]:
    """The feature names announced in a raw query string; empty when there are none.

    Never raises: a malformed query string announces nothing. Only the first
    ``channels-features`` parameter counts, and at most 16 names of at most 64 characters.
    """
    text = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    if FEATURES_PARAMETER not in text:
        return _NONE
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key == FEATURES_PARAMETER:
            names = value.split(",", _MAX_FEATURES)[:_MAX_FEATURES]
            return frozenset(n.strip() for n in names if 0 < len(n.strip()) <= 64)
    return _NONE
