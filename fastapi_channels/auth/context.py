"""Who a connection is: the `Authentication` record kept in the connection's scope.

``JWTAuth`` records it at the handshake (or on an HTTP request) and replaces it on an in-band
renewal; `get_authentication` reads it back from an ``HTTPConnection`` or a
``SocketConnection`` (both share the handshake's ASGI scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from fastapi_channels.auth.tokens import TokenSource
from fastapi_channels.auth.verifier import VerifiedToken

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from fastapi_channels.core.connection import SocketConnection

__all__ = ["SCOPE_KEY", "Authentication", "get_authentication"]

SCOPE_KEY: Final = "fastapi_channels.authentication"
"""The ASGI scope key under which the connection's `Authentication` is kept."""

UserT = TypeVar("UserT")


@dataclass(frozen=True, slots=True)
class Authentication(Generic[UserT]):
    """Who a connection is, and until when its token is valid.

    Attributes:
        user: what the user loader returned.
        subject: the subject claim; a renewal must present the same one.
        token: the verified token (claims, key id, algorithm, expiry).
        source: where the token was found; ``None`` after an in-band renewal.
    """

    user: UserT
    subject: str
    token: VerifiedToken
    source: TokenSource | None

    @property
    def expires_at(self) -> float | None:
        """The token's ``exp`` as a UNIX timestamp, or ``None`` if it never expires."""
        return self.token.expires_at


def get_authentication(
    connection: HTTPConnection | SocketConnection,
) -> Authentication[Any] | None:
    """The authentication `JWTAuth` recorded (or renewed) for this connection, if any."""
    found = connection.scope.get(SCOPE_KEY)
    return found if isinstance(found, Authentication) else None
