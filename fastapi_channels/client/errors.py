"""Exceptions of the Python client.

All derive from `ChannelsError`. `ConnectionClosed` and `ReplyError` are defined once, in
`fastapi_channels.wire.errors`, and re-exported here: the server raises the same
`ConnectionClosed`, the test client the same `ReplyError`.

```text
ChannelsError
├── ConnectionClosed            not connected, or the connection ended while waiting
│   └── ConnectFailed           a connection attempt failed (network, handshake, no ready)
├── Refused                     the server refused the connection for good: not retried
├── SubscriptionDenied          the server refused a subscription
├── RenewalError                the server refused an in-band token renewal
└── ReplyError                  the server answered a request with an error
```

Waits that run out raise the built-in `TimeoutError`.
"""

from __future__ import annotations

from fastapi_channels.wire.errors import ChannelsError, ConnectionClosed, ReplyError

__all__ = [
    "ConnectFailed",
    "ConnectionClosed",
    "Refused",
    "RenewalError",
    "ReplyError",
    "SubscriptionDenied",
]


class ConnectFailed(ConnectionClosed):
    """A connection attempt failed before the server's ``ready``; worth retrying.

    The cause (``OSError``, a websockets handshake error, ``TimeoutError``) is chained as
    ``__cause__``; `code` is the close code when the server closed the socket.
    """


class Refused(ChannelsError):
    """The server refused the connection for good.

    That is a ``disconnect`` packet before ``ready``, then a close the reconnect rule does not
    retry (1000, 1008). A refusal closed with a code it retries (``server busy``, 1013) is a
    `ConnectFailed` instead, and is retried.

    Attributes:
        reason: the reason the server gave. Retrying with the same credentials would be refused
            again, so the client never does.
        code: the close code that followed, when known.
    """

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(f"connection refused: {reason}")
        self.reason = reason
        self.code = code


class SubscriptionDenied(ChannelsError):
    """The server refused a subscription, or it was unsubscribed while pending.

    Attributes:
        channel: the channel name as requested.
        reason: the server's reason.
    """

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(f"subscription to {channel} refused: {reason}")
        self.channel = channel
        self.reason = reason


class RenewalError(ChannelsError):
    """The server refused to renew the connection's token in-band.

    The connection goes on with the token it has until that one expires.

    Attributes:
        reason: the server's reason (deliberately generic, e.g. ``authentication failed``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"token renewal refused: {reason}")
        self.reason = reason
