"""One connection attempt: from a token to a websocket the server has said ``ready`` on.

The token (or the provider giving it) is asked for first, then put where the chosen transport
carries it, then the websocket handshake and the server's ``ready`` share one deadline. Nothing
here retries or keeps state: an attempt either returns an open, ready websocket or raises, and
on any failure after the handshake the websocket is closed before the exception leaves.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from fastapi_channels.client.errors import ConnectFailed, Refused
from fastapi_channels.client.packets import parse_packet
from fastapi_channels.wire.features import FEATURES_PARAMETER, OUR_FEATURES
from fastapi_channels.wire.protocol import DISCONNECT, READY

__all__ = [
    "ABNORMAL_CLOSURE",
    "TokenProvider",
    "TokenTransport",
    "close_details",
    "fetch_token",
    "handshake_arguments",
    "open_connection",
]

logger = logging.getLogger("fastapi_channels.client")

TokenProvider = Callable[[], str | None] | Callable[[], Awaitable[str | None]]
TokenTransport = Literal["subprotocol", "bearer", "header", "query"]

ABNORMAL_CLOSURE = 1006
"""The close code of a connection that ended without a close frame (a dropped network)."""


def close_details(exc: WebSocketClosed) -> tuple[int, str]:
    """The close code and reason of a closed websocket; 1006 and no reason without a frame."""
    if exc.rcvd is None:
        return ABNORMAL_CLOSURE, ""
    return exc.rcvd.code, exc.rcvd.reason


async def fetch_token(token: str | TokenProvider | None) -> str | None:
    """The token to present now: ``token`` itself, or what the provider returns.

    ``None``, ``""``, ``"null"`` and ``"undefined"`` all mean no token (anonymous).

    Raises:
        ConnectFailed: the provider raised; its exception is chained.
    """
    try:
        value: Any = token() if callable(token) else token
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:
        raise ConnectFailed(f"the token provider failed: {exc!r}") from exc
    return None if value in (None, "", "null", "undefined") else str(value)


def handshake_arguments(
    url: str, headers: Mapping[str, str], token: str | None, transport: TokenTransport
) -> tuple[str, list[Subprotocol], dict[str, str]]:
    """The URL, subprotocols and headers of a handshake carrying ``token`` by ``transport``.

    The URL also announces what this client understands (``channels-features``, see
    `fastapi_channels.wire.features`); servers that know nothing of it ignore it.

    Raises:
        ValueError: ``transport`` is not one of `TokenTransport`.
    """
    headers = dict(headers)
    subprotocols: list[Subprotocol] = []
    url = _announcing(url)
    if token is not None:
        if transport == "subprotocol":
            subprotocols = [Subprotocol(token)]
        elif transport == "bearer":
            subprotocols = [Subprotocol("bearer"), Subprotocol(token)]
        elif transport == "header":
            headers["Authorization"] = f"Bearer {token}"
        elif transport == "query":
            parts = urlsplit(url)
            query = [*parse_qsl(parts.query), ("token", token)]
            url = urlunsplit(parts._replace(query=urlencode(query)))
        else:
            raise ValueError(f"unknown token transport {transport!r}")
    return url, subprotocols, headers


def _announcing(url: str) -> str:
    """``url`` with the features this client understands (`OUR_FEATURES`) in its query."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != FEATURES_PARAMETER]
    query.append((FEATURES_PARAMETER, OUR_FEATURES))
    return urlunsplit(parts._replace(query=urlencode(query, safe=",")))


async def open_connection(
    url: str,
    token: str | None,
    *,
    transport: TokenTransport,
    headers: Mapping[str, str],
    options: Mapping[str, Any],
    timeout: float,
    retry: Callable[[int], bool],
) -> tuple[ClientConnection, Any]:
    """Open a websocket to ``url`` and wait for ``ready``; return it with ``ready``'s data.

    The handshake and the wait for ``ready`` may each take up to ``timeout`` seconds. A
    ``disconnect`` before ``ready`` is a refusal: final when the close that follows is one
    ``retry`` does not retry (1000, 1008 by default), else worth another attempt (``server
    busy``, closed with 1013).

    Raises:
        Refused: the server refused the connection for good.
        ConnectFailed: anything else went wrong; the cause is chained. The message names
            ``url`` as given, never the one carrying a token.
        InvalidURI: ``url`` is not a websocket URL.
    """
    target, subprotocols, extra = handshake_arguments(url, headers, token, transport)
    try:
        async with asyncio.timeout(timeout):
            ws = await connect(
                target,
                subprotocols=subprotocols or None,
                additional_headers=extra or None,
                open_timeout=None,
                **options,
            )
    except InvalidURI:
        raise
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise ConnectFailed(f"cannot connect to {url}: {exc}", code=ABNORMAL_CLOSURE) from exc
    try:
        ready = await _await_ready(ws, timeout, retry)
    except BaseException:
        await ws.close()
        raise
    return ws, ready


async def _await_ready(ws: ClientConnection, timeout: float, retry: Callable[[int], bool]) -> Any:
    """Return ``ready``'s data; a ``disconnect`` first is a refusal, final or not."""
    refusal: str | None = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                packet = parse_packet(await ws.recv())
                if packet is None:
                    continue
                if packet.event == READY and refusal is None:
                    return packet.data
                if packet.event == DISCONNECT:
                    data = packet.data if isinstance(packet.data, dict) else {}
                    refusal = str(data.get("reason", "refused"))
                else:
                    logger.warning("ignoring %r received before ready", packet.event)
    except WebSocketClosed as exc:
        code, _ = close_details(exc)
        if refusal is None:
            raise ConnectFailed(f"closed before ready ({code})", code=code) from exc
        if retry(code):
            raise ConnectFailed(f"refused for now: {refusal}", code, refusal) from exc
        raise Refused(refusal, code) from None
    except TimeoutError as exc:
        if refusal is not None:
            raise Refused(refusal) from None
        raise ConnectFailed("no ready packet in time", code=ABNORMAL_CLOSURE) from exc
