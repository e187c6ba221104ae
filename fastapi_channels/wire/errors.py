"""Exceptions and close codes of fastapi_channels.

Every exception the library raises derives from `ChannelsError`:

```text
ChannelsError
├── ConfigurationError      bad set-up, raised at registration or start-up
├── ProtocolError           a client sent something the protocol does not allow
│   └── InvalidData         the packet's data failed a handler's declared type
├── Reject                  middleware, is_authorised or a handler refuses, with a reason
│   └── AuthenticationError the credential is missing, invalid or from a forbidden origin
├── ConnectionClosed        sending on a connection that is closed
├── InvalidChannel          a send names a channel its listener does not serve (ValueError)
├── BrokerError             the broker (in memory or Redis) failed: nothing was published
│   ├── OutcomeUnknown      the broker failed after the message left: it may have arrived
│   └── HistoryFull         a channel would exceed its listener's History.max_channels
└── ReplyError              a request was answered with an error (clients, test client)
```

Client-facing failures are mapped to error packets (see `ErrorCode`) or close codes
(see `CloseCode`) in one place, the dispatcher; nothing a client sends can escape as an
unhandled exception.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any

__all__ = [
    "AuthFailure",
    "AuthenticationError",
    "BrokerError",
    "ChannelsError",
    "CloseCode",
    "ConfigurationError",
    "ConnectionClosed",
    "ErrorCode",
    "HistoryFull",
    "InvalidChannel",
    "InvalidData",
    "OutcomeUnknown",
    "ProtocolError",
    "Reject",
    "ReplyError",
]


class CloseCode(IntEnum):
    """Websocket close codes the server uses.

    The Envuso client stops for good on any close frame, so a refusal is always sent as a
    ``disconnect`` packet followed by `NORMAL`.
    """

    NORMAL = 1000
    """Refused at connect, or disconnected by the application (after a ``disconnect`` packet)."""
    GOING_AWAY = 1001
    """The server is shutting down for good."""
    POLICY_VIOLATION = 1008
    """The client broke a limit persistently (rate limits)."""
    MESSAGE_TOO_BIG = 1009
    """An inbound frame was larger than ``Limits.max_message_size``."""
    INTERNAL_ERROR = 1011
    """An unexpected server failure on this connection."""
    SERVICE_RESTART = 1012
    """The server restarts; reconnect later."""
    TRY_AGAIN_LATER = 1013
    """The connection's outgoing queue overflowed under ``OverflowPolicy.DISCONNECT``."""
    TOKEN_EXPIRED = 4001
    """The connection's token expired and was not renewed in time (after a ``disconnect``
    packet with the reason ``token expired``)."""


class ErrorCode(StrEnum):
    """The ``data.code`` of a ``channels:error`` packet (see the protocol document)."""

    INVALID_FRAME = "invalid-frame"
    """The frame is not a JSON object."""
    BINARY_FRAME = "binary-frame"
    """A binary frame; only text frames carry packets."""
    INVALID_PACKET = "invalid-packet"
    """The object lacks a string ``event``, or a field has the wrong type or size."""
    INVALID_DATA = "invalid-data"
    """The packet's ``data`` does not match the type the handler (or ``is_authorised``)
    declares; ``errors`` lists each problem as ``{loc, msg, type}`` without the input."""
    UNKNOWN_EVENT = "unknown-event"
    """No listener handles this event (on this channel)."""
    NOT_SUBSCRIBED = "not-subscribed"
    """A channel event for a channel the connection has not subscribed to."""
    UNKNOWN_CHANNEL = "unknown-channel"
    """A subscribe request names a channel no listener serves (replies only)."""
    UNAUTHENTICATED = "unauthenticated"
    """The listener requires an authenticated user."""
    NOT_AUTHORISED = "not-authorised"
    """``is_authorised`` refused a subscription (replies only)."""
    TOO_MANY_SUBSCRIPTIONS = "too-many-subscriptions"
    """The connection has ``Limits.max_subscriptions`` subscriptions already (replies only)."""
    REJECTED = "rejected"
    """Middleware or the handler refused the event; ``message`` holds its reason."""
    HANDLER_ERROR = "handler-error"
    """The handler raised; the details are in the server log only."""
    HANDLER_TIMEOUT = "handler-timeout"
    """The handler ran longer than ``Limits.handler_timeout``."""
    BROKER_UNAVAILABLE = "broker-unavailable"
    """The handler's send could not reach the other processes (Redis is unreachable): worth
    retrying later. Nothing reached another process; plain channels published without a key
    still delivered to this process's subscribers."""
    OUTCOME_UNKNOWN = "outcome-unknown"
    """The handler's send reached the broker but no answer came back in time (Redis stalled):
    the message may or may not have been delivered. Retry with the same ``key`` (see the
    protocol's idempotency keys): a retry is then delivered at most once in all."""
    HISTORY_FULL = "history-full"
    """The handler broadcast on a history channel that keeps nothing yet, and its listener's
    ``History.max_channels`` channels keep history already: nothing was sent. Not worth
    retrying at once; a channel frees its place ``History.keep`` after its last broadcast."""
    RATE_LIMITED = "rate-limited"
    """The connection sent faster than ``Limits.rate``; the packet was dropped."""
    SHUTTING_DOWN = "shutting-down"
    """The server is stopping and no longer handles packets."""


class ChannelsError(Exception):
    """Base class of every exception raised by fastapi_channels."""


class ConfigurationError(ChannelsError):
    """The application's set-up is invalid.

    A malformed or ambiguous channel pattern, a duplicate listener, a reserved event name, a
    handler with a wrong signature. Raised at registration or start-up, never while serving.
    """


class ProtocolError(ChannelsError):
    """A client sent a frame the protocol does not allow.

    Args:
        code: the error packet's code.
        message: a short, client-safe explanation (never echoes large input).
        packet_id: the offending packet's ``id`` when it carried a valid one, so that the
            answer is a reply to that id rather than a ``channels:error`` packet.
    """

    def __init__(
        self, code: ErrorCode, message: str, *, packet_id: str | int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.packet_id = packet_id


class InvalidData(ProtocolError):
    """A packet's ``data`` does not match the type its handler declares.

    Raised by the dispatcher before the handler runs (the handler then does not run); a handler
    may raise it too, for checks its types cannot express. Answered with code
    ``invalid-data`` and `errors`.

    Args:
        message: a short summary, e.g. ``"2 validation errors"``.
        errors: at most a bounded number of ``{"loc": [...], "msg": str, "type": str}`` items;
            they never hold the input's values.
    """

    def __init__(self, message: str, errors: list[dict[str, object]] | None = None) -> None:
        super().__init__(ErrorCode.INVALID_DATA, message)
        self.errors: list[dict[str, object]] = errors or []


class Reject(ChannelsError):
    """Refuse the current step with a reason the client may see.

    Raise it from middleware, ``is_authorised`` or a handler. At connect the client receives a
    ``disconnect`` packet with the reason and the socket closes with ``CloseCode.NORMAL``; at
    subscribe a ``subscribe-channel-response`` with ``successful: false``; on an event an error
    packet with code ``rejected``.

    Args:
        reason: the text sent to the client. Keep secrets and claims out of it.
    """

    def __init__(self, reason: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason


class AuthFailure(StrEnum):
    """Why an authentication was refused: the specific reason written to the server log.

    Only `AuthenticationError.reason`, which is one of three generic texts, reaches the
    client; these values never do.
    """

    MISSING = "missing"
    """No credential was presented and anonymous connections are not allowed."""
    MALFORMED = "malformed"
    """The credential is not a compact JWS (three base64url segments), or its header or payload
    is not valid JSON, or it was offered ambiguously (twice, or with a foreign scheme)."""
    OVERSIZED = "oversized"
    """The token is longer than the configured maximum; it was not decoded at all."""
    ALGORITHM = "algorithm"
    """The header names an algorithm that is not configured for the selected key (``none``
    included, always)."""
    UNKNOWN_KEY = "unknown-key"
    """The header's ``kid`` names no configured key, or it is absent and there is no default."""
    SIGNATURE = "signature"
    """The signature does not verify with the selected key."""
    EXPIRED = "expired"
    """``exp`` is in the past, beyond the leeway."""
    NOT_YET_VALID = "not-yet-valid"
    """``nbf`` or ``iat`` is in the future, beyond the leeway."""
    AUDIENCE = "audience"
    """``aud`` does not name the configured audience, or is present when none is configured."""
    ISSUER = "issuer"
    """``iss`` is not the configured issuer."""
    CLAIMS = "claims"
    """A required claim is missing, or a registered claim has the wrong type."""
    USER = "user"
    """The token is valid but the user loader found no user for it (or refused it)."""
    SUBJECT_CHANGED = "subject-changed"
    """A renewal presented a valid token for a different user than the connection's."""
    ORIGIN = "origin"
    """The handshake's ``Origin`` is not in the allow-list."""


_PUBLIC_REASONS: dict[AuthFailure, str] = {
    AuthFailure.MISSING: "authentication required",
    AuthFailure.ORIGIN: "origin not allowed",
}


class AuthenticationError(Reject):
    """The connection or request could not be authenticated.

    The client sees only `reason`, a generic text ("authentication required",
    "authentication failed" or "origin not allowed"); `failure` and `detail` say
    precisely what went wrong and are for the server log. Neither ever holds the token, a
    secret or a claim's value.

    Args:
        failure: the specific reason.
        detail: a short explanation for the log.
    """

    def __init__(self, failure: AuthFailure, detail: str = "") -> None:
        super().__init__(_PUBLIC_REASONS.get(failure, "authentication failed"))
        self.failure = failure
        self.detail = detail or failure.value

    @property
    def status_code(self) -> int:
        """The HTTP status of this refusal: 403 for a forbidden origin, else 401."""
        return 403 if self.failure is AuthFailure.ORIGIN else 401


class ConnectionClosed(ChannelsError):
    """The connection is closed or closing; nothing more can be sent on it.

    Attributes:
        code: the close code, when known.
        reason: the close reason, when known.
    """

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class InvalidChannel(ChannelsError, ValueError):
    """A send names a malformed channel, or one the given listener's pattern does not match.

    A programming error on the sending side, raised before anything is sent.
    """


class BrokerError(ChannelsError):
    """The broker could not publish or subscribe (for Redis: the server is unreachable).

    Raised by a publish, it means the message reached no other process (see `OutcomeUnknown`
    for the case where it may have).
    """


class OutcomeUnknown(BrokerError):
    """A publish failed after the message was handed to the transport: it may have been published.

    Redis received the command but its answer did not come back within the broker's timeout
    (a stall, a connection dropped mid-reply). Retrying without an idempotency key may deliver
    the message twice; retrying with the same key delivers it at most once in all.
    """


class HistoryFull(BrokerError):
    """A broadcast would make one channel too many keep history; it was sent nowhere.

    Raised by a broadcast on a history channel that holds no history yet (never broadcast, or
    idle past ``History.keep``) when its listener's ``History.max_channels`` channels hold
    history already. Channels that hold history keep broadcasting. Answered to a client whose
    handler raised it with the error code ``history-full``.

    Args:
        message: what was refused, for the log.
    """


class ReplyError(ChannelsError):
    """A request (a packet with an ``id``) was answered with an error.

    The one exception for a failed request, wherever it is made from Python:
    ``ChannelsClient.request`` and ``Channel.request`` (`fastapi_channels.client`) and
    ``SocketTestClient.request`` (`fastapi_channels.testing`) raise it; the JavaScript client's
    ``ReplyError`` carries the same ``code`` and ``error``. The server never raises it: it sends
    the error reply instead. ``str()`` of it is the server's message (else its code).

    Args:
        code: the error's ``code``; from a fastapi_channels server an `ErrorCode` value,
            ``None`` when the server sent none (another server).
        message: the error's ``message``, safe to show.
        errors: the validation problems, for code ``invalid-data``.
        error: the whole error object as the server sent it; built from the other arguments
            when not given.

    Attributes:
        code: as given.
        message: as given.
        errors: each problem as ``{"loc": [...], "msg": str, "type": str}``; empty unless the
            code is ``invalid-data``.
        error: the whole error object, with any member a server adds beyond the above.
    """

    def __init__(
        self,
        code: str | None,
        message: str = "",
        errors: list[dict[str, object]] | None = None,
        *,
        error: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or code or "request failed")
        self.code = code
        self.message = message
        self.errors: list[dict[str, object]] = errors or []
        if error is None:
            error = {"code": code, "message": message}
            if errors:
                error["errors"] = errors
        self.error: dict[str, Any] = error

    @classmethod
    def from_reply(cls, error: object) -> ReplyError:
        """Build it from a reply's ``error`` member (or a ``channels:error`` packet's ``data``).

        Never fails on what a server sends: an error that is not an object becomes the
        message, and members of the wrong type are left out (the object is kept whole in
        `error`).
        """
        body: dict[str, Any] = dict(error) if isinstance(error, dict) else {"message": str(error)}
        code, message, errors = body.get("code"), body.get("message"), body.get("errors")
        return cls(
            None if code is None else str(code),
            "" if message is None else str(message),
            [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else None,
            error=body,
        )
