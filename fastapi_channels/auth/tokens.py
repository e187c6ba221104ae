"""Where a request or websocket handshake carries its token, and which subprotocol to echo.

Four sources, tried in the order the application configures; the first that carries a token
wins, and a bad token there is refused rather than skipped in favour of the next source:

``subprotocol``
    The ``Sec-WebSocket-Protocol`` offer (websockets only). Browsers cannot set headers on a
    websocket, so the Envuso client offers the token itself as the subprotocol; the server must
    echo it. A client may instead offer the pair ``bearer, <token>``, and then only ``bearer`` is
    echoed, so the token does not travel back in the response.
``header``
    ``Authorization: Bearer <token>``, for non-browser clients and HTTP routes.
``cookie``
    A cookie (``access_token`` by default). Browsers send it on their own, including on
    cross-site websocket handshakes, so this source comes with an ``Origin`` check.
``query``
    ``?token=<token>``, as the first-generation Envuso client sent it. URLs end up in access
    logs, proxies and browser history, so this source is off unless listed.

An absent value, an empty one, and the strings ``null`` and ``undefined`` (what a JavaScript
client sends for a missing token) all mean "no token here".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from starlette.requests import HTTPConnection

from fastapi_channels.auth.verifier import looks_like_jwt
from fastapi_channels.wire.errors import AuthenticationError, AuthFailure

__all__ = [
    "BEARER",
    "PresentedToken",
    "TokenSource",
    "find_token",
    "select_subprotocol",
    "subprotocol_token",
]

BEARER: Final = "bearer"
"""The subprotocol marker (compared case-insensitively) announcing that the next offered value
is the token."""
_NO_TOKEN: Final = frozenset({"", "null", "undefined"})


class TokenSource(StrEnum):
    """Where a token may be read from."""

    SUBPROTOCOL = "subprotocol"
    HEADER = "header"
    COOKIE = "cookie"
    QUERY = "query"


@dataclass(frozen=True, slots=True)
class PresentedToken:
    """A token as the client presented it, not yet verified.

    ``repr`` hides the token so that it cannot end up in a log by accident.
    """

    token: str
    source: TokenSource

    def __repr__(self) -> str:
        return f"PresentedToken(source={self.source.value!r}, length={len(self.token)})"


def _present(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value.lower() in _NO_TOKEN else value


def _marker_index(values: Sequence[str]) -> int | None:
    lowered = [value.strip().lower() for value in values]
    if lowered.count(BEARER) > 1:
        raise AuthenticationError(AuthFailure.MALFORMED, "the bearer marker is offered twice")
    return lowered.index(BEARER) if BEARER in lowered else None


def subprotocol_token(offered: Sequence[str]) -> str | None:
    """The token carried by a ``Sec-WebSocket-Protocol`` offer, or ``None``.

    - ``bearer, <token>`` (the marker anywhere, the token right after it): the token.
    - a single value: that value, whatever it looks like (it then has to verify).
    - several values without the marker: the one shaped like a JWT, if exactly one is.

    Raises:
        AuthenticationError: the marker is offered twice, or several values look like JWTs.
    """
    marker = _marker_index(offered)
    if marker is not None:
        return _present(offered[marker + 1]) if marker + 1 < len(offered) else None
    if len(offered) == 1:
        return _present(offered[0])
    candidates = [value.strip() for value in offered if looks_like_jwt(value.strip())]
    if len(candidates) > 1:
        raise AuthenticationError(AuthFailure.MALFORMED, "several offered values look like JWTs")
    return candidates[0] if candidates else None


def select_subprotocol(offered: Sequence[str]) -> str | None:
    """The offered subprotocol the server echoes in its handshake response.

    Never a value that was not offered, and never the token when the ``bearer`` marker was
    offered: then the marker itself. A single offered value is echoed as it is, because the
    Envuso client offers its token alone and fails the handshake unless it comes back. Among
    several values without a marker, the first that does not look like a JWT.

    Args:
        offered: the offered values, in order (the ASGI scope's ``subprotocols``).

    Returns:
        The value to echo, or ``None`` when nothing was offered.
    """
    if not offered:
        return None
    lowered = [value.strip().lower() for value in offered]
    if BEARER in lowered:
        return offered[lowered.index(BEARER)]
    if len(offered) == 1:
        return offered[0]
    for value in offered:
        if not looks_like_jwt(value.strip()):
            return value
    return offered[0]


def _authorization_token(connection: HTTPConnection) -> str | None:
    values = connection.headers.getlist("authorization")
    if len(values) > 1:
        raise AuthenticationError(AuthFailure.MALFORMED, "several Authorization headers")
    if not values:
        return None
    scheme, _, credentials = values[0].strip().partition(" ")
    if scheme.lower() != BEARER:
        return None
    token = _present(credentials)
    if token is not None and any(char.isspace() for char in token):
        raise AuthenticationError(AuthFailure.MALFORMED, "the Bearer credentials hold spaces")
    return token


def _query_token(connection: HTTPConnection, name: str) -> str | None:
    values = connection.query_params.getlist(name)
    if len(values) > 1:
        raise AuthenticationError(AuthFailure.MALFORMED, f"the {name!r} parameter is repeated")
    return _present(values[0]) if values else None


def find_token(
    connection: HTTPConnection,
    sources: Sequence[TokenSource],
    *,
    cookie_name: str = "access_token",
    query_param: str = "token",
) -> PresentedToken | None:
    """The first token found in ``sources``, in order, or ``None`` for an anonymous client.

    The subprotocol source is read on websocket handshakes only.

    Raises:
        AuthenticationError: a source holds something ambiguous (two ``Authorization`` headers,
            a repeated query parameter, a doubled ``bearer`` marker).
    """
    is_websocket = connection.scope["type"] == "websocket"
    for source in sources:
        if source is TokenSource.SUBPROTOCOL:
            token = (
                subprotocol_token(connection.scope.get("subprotocols", ()))
                if is_websocket
                else None
            )
        elif source is TokenSource.HEADER:
            token = _authorization_token(connection)
        elif source is TokenSource.COOKIE:
            token = _present(connection.cookies.get(cookie_name))
        else:
            token = _query_token(connection, query_param)
        if token is not None:
            return PresentedToken(token, source)
    return None
