"""Token lifetime on a live connection: expiry, and in-band renewal.

A websocket outlives the token it was opened with. When the token's ``exp`` (plus the
verifier's leeway) passes, the connection receives ``disconnect`` with the reason
``token expired`` and is closed with `CloseCode.TOKEN_EXPIRED` (4001), unless the client
renewed first by sending:

```json
{"event": "channels:authenticate", "data": {"token": "<fresh jwt>"}}
```

which is answered by ``channels:authenticate-response`` with ``{"successful": true,
"expires_at": <exp>}`` or ``{"successful": false, "reason": <generic reason>}``. A renewal must
verify like a handshake token and name the same subject; it keeps every subscription and
replaces the connection's user with the freshly loaded one. A failed renewal changes nothing:
the connection lives on until the current token expires.

Each connection has at most one timer (``loop.call_at``), rescheduled by a renewal and
cancelled when the connection goes away: no polling, whatever the number of connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.requests import HTTPConnection

from fastapi_channels.app.extensions import ConnectionExtension
from fastapi_channels.auth.context import Authentication, get_authentication
from fastapi_channels.wire.errors import AuthenticationError, CloseCode
from fastapi_channels.wire.protocol import AUTHENTICATE, AUTHENTICATE_RESPONSE, SocketPacket, encode

if TYPE_CHECKING:
    from fastapi_channels.auth.dependency import JWTAuth
    from fastapi_channels.core.connection import SocketConnection

__all__ = ["EXPIRED_REASON", "TokenLifetime"]

logger = logging.getLogger("fastapi_channels.auth")

EXPIRED_REASON = "token expired"
"""The ``disconnect`` reason (and close reason) of a connection whose token expired."""


class TokenLifetime(ConnectionExtension):
    """Closes connections whose token expires, and renews tokens sent in-band.

    Added to ``Channels`` on its own when ``JWTAuth`` is the user dependency (it is the
    dependency's ``connection_extension``).

    Args:
        auth: the authentication that verifies renewals and loads the user.
    """

    events: ClassVar[frozenset[str]] = frozenset({AUTHENTICATE})

    def __init__(self, auth: JWTAuth[Any]) -> None:
        self._auth = auth
        self._timers: dict[SocketConnection, asyncio.TimerHandle] = {}

    @property
    def pending(self) -> int:
        """How many connections have an expiry scheduled."""
        return len(self._timers)

    def opened(self, connection: SocketConnection) -> None:
        """Schedule the expiry of an authenticated connection's token."""
        found = get_authentication(connection)
        if found is not None:
            self._schedule(connection, found)

    def closed(self, connection: SocketConnection) -> None:
        """Cancel the connection's expiry."""
        timer = self._timers.pop(connection, None)
        if timer is not None:
            timer.cancel()

    async def handle(self, connection: SocketConnection, packet: SocketPacket) -> dict[str, Any]:
        """Renew the connection's token; always answers with one response packet.

        Returns the response's data, which is also the reply's when the packet has an ``id``.
        """
        response = await self._renew(connection, packet)
        connection.push(encode(AUTHENTICATE_RESPONSE, response).decode())
        return response

    async def _renew(self, connection: SocketConnection, packet: SocketPacket) -> dict[str, Any]:
        data = packet.data
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            return {"successful": False, "reason": "data.token must be a string"}
        current = get_authentication(connection)
        if current is None:
            return {"successful": False, "reason": "authentication required"}
        try:
            renewed = await self._auth.renew(HTTPConnection(connection.scope), token, current)
        except AuthenticationError as exc:
            return {"successful": False, "reason": exc.reason}
        if connection.is_open:
            connection.user = renewed.user
            self._schedule(connection, renewed)
            logger.debug("connection %s: token renewed", connection.id)
        return {"successful": True, "expires_at": renewed.expires_at}

    def _schedule(self, connection: SocketConnection, found: Authentication[Any]) -> None:
        self.closed(connection)
        if found.expires_at is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, found.expires_at + self._auth.verifier.leeway - time.time())
        self._timers[connection] = loop.call_at(loop.time() + delay, self._expire, connection)

    def _expire(self, connection: SocketConnection) -> None:
        self._timers.pop(connection, None)
        if connection.is_open:
            logger.info("connection %s: token expired, disconnecting", connection.id)
            connection.close_soon(CloseCode.TOKEN_EXPIRED, EXPIRED_REASON)
