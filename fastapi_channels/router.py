"""The ASGI edge: the websocket endpoint, its refusals, and the lifespan that runs the server."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, WebSocket
from fastapi.routing import APIWebSocketRoute
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketState

from fastapi_channels import di
from fastapi_channels.connection import SocketConnection
from fastapi_channels.errors import CloseCode, Reject
from fastapi_channels.protocol import DISCONNECT, READY, encode

if TYPE_CHECKING:
    from fastapi_channels.channels import Channels

__all__ = ["build_router", "select_subprotocol"]

logger = logging.getLogger("fastapi_channels.router")


def select_subprotocol(offered: Sequence[str]) -> str | None:
    """Choose the subprotocol to echo: the first one offered (the Envuso client's token)."""
    return offered[0] if offered else None


_ASGI_KEY = "fastapi_channels.asgi"
"""Scope key holding the ``(receive, send)`` the route was called with, below Starlette's
per-message wrappers and the refusal guard (a tuple in a dict that has room: no new memory)."""


class _ASGITransport:
    """Sends text frames straight through the route's ASGI ``send``.

    Starlette's ``WebSocket.send`` checks its state machine and goes through two wrapper
    coroutines on every message; after the handshake those checks cannot fail for a text frame
    (a send on a closed socket fails in the server's ``send`` itself), so the hot path skips
    them and returns the server's own send coroutine, which the connection may step in place.
    The close still goes through Starlette, which tracks the closing state.
    """

    __slots__ = ("_send", "_websocket")

    def __init__(self, websocket: WebSocket, send: Send) -> None:
        self._websocket = websocket
        self._send = send

    def send_text(self, text: str) -> Coroutine[Any, Any, None]:
        return self._send({"type": "websocket.send", "text": text})  # type: ignore[return-value]

    async def close(self, code: int, reason: str) -> None:
        if self._websocket.application_state is WebSocketState.CONNECTED:
            await self._websocket.close(code, reason)


async def _refuse(websocket: WebSocket, reason: str) -> None:
    """Envuso's refusal: accept (echoing the subprotocol), ``disconnect``, close 1000."""
    await websocket.accept(subprotocol=select_subprotocol(websocket.scope.get("subprotocols", [])))
    await websocket.send_text(encode(DISCONNECT, {"reason": reason}).decode())
    await websocket.close(CloseCode.NORMAL, reason)


def _public_reason(exc: Exception) -> str:
    if isinstance(exc, Reject):
        return exc.reason
    if isinstance(exc, HTTPException):
        return _status_reason(exc.status_code)
    return "connection refused"


def _status_reason(status: int) -> str:
    return "unauthorised" if status in (401, 403) else "connection refused"


class _RefuseOnError:
    """Turns a failure before the handshake completes into the protocol's refusal.

    A user dependency that raises (``HTTPException(401)``, ``WebSocketException``, anything)
    makes FastAPI answer with an HTTP response or a close before accepting, which the Envuso
    client treats as a dropped connection and retries forever. This wrapper replaces those
    answers with: accept (echoing the subprotocol), ``disconnect`` with a generic reason, close
    1000. The details go to the log only.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = refused = connected = False

        async def tracking_receive() -> Message:
            nonlocal connected
            message = await receive()
            connected = connected or message["type"] == "websocket.connect"
            return message

        async def refuse(reason: str) -> None:
            nonlocal refused
            refused = True
            if not connected:
                await tracking_receive()
            await send(
                {
                    "type": "websocket.accept",
                    "subprotocol": select_subprotocol(scope.get("subprotocols", [])),
                }
            )
            frame = encode(DISCONNECT, {"reason": reason}).decode()
            await send({"type": "websocket.send", "text": frame})
            await send({"type": "websocket.close", "code": CloseCode.NORMAL, "reason": reason})

        async def guarded_send(message: Message) -> None:
            nonlocal accepted
            kind = message["type"]
            if accepted:
                await send(message)
            elif refused:
                return  # the rest of a replaced HTTP response
            elif kind == "websocket.accept":
                accepted = True
                await send(message)
            elif kind == "websocket.close":
                logger.info("websocket refused at the handshake with close %s", message.get("code"))
                await refuse(message.get("reason") or "connection refused")
            elif kind == "websocket.http.response.start":
                logger.info("websocket refused at the handshake with HTTP %s", message["status"])
                await refuse(_status_reason(message["status"]))
            else:
                await send(message)

        scope[_ASGI_KEY] = (receive, send)
        try:
            await self.app(scope, tracking_receive, guarded_send)
        except Exception as exc:
            if accepted or refused:
                raise
            if isinstance(exc, Reject | HTTPException):
                logger.info("websocket refused at the handshake: %r", exc)
            else:
                logger.exception("websocket refused: the handshake failed")
            await refuse(_public_reason(exc))


async def _serve(channels: Channels, websocket: WebSocket, user: Any) -> None:
    dispatcher = channels.dispatcher
    if dispatcher is None:
        await _refuse(websocket, "server not running")
        return
    if user is None and not channels.allow_anonymous:
        await _refuse(websocket, "authentication required")
        return
    limits = channels.limits
    # After the handshake, frames go straight through the route's ASGI callables: Starlette's
    # state checks and wrapper coroutines cost time per frame and a suspended frame per idle
    # connection, and cannot fail once accepted (the server's own calls raise instead).
    receive, send = websocket.scope.get(_ASGI_KEY, (websocket.receive, websocket.send))
    connection = SocketConnection(
        _ASGITransport(websocket, send),
        id=uuid.uuid4().hex,
        user=user,
        user_key=channels.user_key(user),
        scope=websocket.scope,
        max_queue=limits.queue_size,
        overflow=limits.overflow,
    )
    try:
        await dispatcher.connect(connection)
    except Reject as exc:
        await _refuse(websocket, exc.reason)
        return
    await websocket.accept(subprotocol=select_subprotocol(websocket.scope.get("subprotocols", [])))
    connection.push(encode(READY, {"id": connection.id}).decode())
    connection.start()
    await channels.server.add_connection(connection)
    max_size = limits.max_message_size
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            if not connection.is_open:
                continue  # closing: drain until the peer answers the close
            text = message.get("text")
            if text is not None:
                if len(text) > max_size or (
                    len(text) * 4 > max_size and len(text.encode()) > max_size
                ):
                    connection._begin_close(CloseCode.MESSAGE_TOO_BIG, "message too big")
                    continue
                await dispatcher.receive_text(connection, text)
            elif len(message.get("bytes") or b"") > max_size:
                connection._begin_close(CloseCode.MESSAGE_TOO_BIG, "message too big")
            else:
                dispatcher.receive_bytes(connection)
    finally:
        await dispatcher.disconnect(connection)
        await connection.wait_closed(limits.close_timeout)


def _endpoint(channels: Channels) -> Callable[..., Any]:
    dependency = channels.user_dependency
    if dependency is None:

        async def anonymous(websocket: WebSocket) -> None:
            await _serve(channels, websocket, None)

        return anonymous

    async def endpoint(websocket: WebSocket, user: Any = Depends(dependency)) -> None:
        await _serve(channels, websocket, user)

    return endpoint


class _AppOverrides:
    """Lets the endpoint see ``app.dependency_overrides`` of the app it is included in."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    @property
    def dependency_overrides(self) -> dict[Any, Any]:
        return self.app.dependency_overrides if self.app is not None else {}


def build_router(channels: Channels) -> APIRouter:
    """Build the router: the websocket endpoint at ``channels.path`` and the server's lifespan.

    The endpoint is a FastAPI websocket route (so the user dependency is solved by FastAPI,
    ``app.dependency_overrides`` included) wrapped in the refusal guard, and registered as a
    plain ASGI route so the guard survives ``include_router``.
    """
    overrides = _AppOverrides()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        overrides.app = app
        async with channels:
            di.attach(app, channels.container)
            yield

    router = APIRouter(lifespan=lifespan)
    if channels.enabled:
        endpoint = APIWebSocketRoute(
            channels.path,
            _endpoint(channels),
            name="fastapi_channels",
            dependency_overrides_provider=overrides,
        )
        router.routes.append(
            WebSocketRoute(channels.path, _RefuseOnError(endpoint.app), name="fastapi_channels")
        )
    return router
