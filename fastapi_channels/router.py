"""The ASGI edge: the websocket endpoint, its refusals, and the lifespan that runs the server."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, WebSocket
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketState

from fastapi_channels import di
from fastapi_channels.auth.tokens import select_subprotocol
from fastapi_channels.connection import SocketConnection
from fastapi_channels.errors import CloseCode, Reject
from fastapi_channels.protocol import DISCONNECT, READY, encode

if TYPE_CHECKING:
    from fastapi_channels.channels import Channels

__all__ = ["build_router", "select_subprotocol"]

logger = logging.getLogger("fastapi_channels.router")


class _ASGITransport:
    """Sends text frames straight through the websocket's ASGI ``send``."""

    __slots__ = ("_websocket",)

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def send_text(self, text: str) -> None:
        await self._websocket.send({"type": "websocket.send", "text": text})

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
    if isinstance(exc, HTTPException) and exc.status_code in (401, 403):
        return "unauthorised"
    return "connection refused"


class _RefuseOnError:
    """Turns an exception raised before the handshake completes into the protocol's refusal.

    The user dependency failing is the usual case; the Envuso client then stops instead of
    retrying forever.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = False

        async def tracking_send(message: Message) -> None:
            nonlocal accepted
            if message["type"] in ("websocket.accept", "websocket.close"):
                accepted = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if accepted:
                raise
            logger.info("websocket refused at the handshake: %r", exc)
            await _refuse(WebSocket(scope, receive, send), _public_reason(exc))


async def _serve(channels: Channels, websocket: WebSocket, user: Any) -> None:
    dispatcher = channels.dispatcher
    if dispatcher is None:
        await _refuse(websocket, "server not running")
        return
    if user is None and not channels.allow_anonymous:
        await _refuse(websocket, "authentication required")
        return
    limits = channels.limits
    connection = SocketConnection(
        _ASGITransport(websocket),
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
    dispatcher.opened(connection)
    max_size = limits.max_message_size
    try:
        while True:
            message = await websocket.receive()
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


def build_router(channels: Channels) -> APIRouter:
    """Build the router: the websocket endpoint at ``channels.path`` and the server's lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with channels:
            di.attach(app, channels.container)
            yield

    router = APIRouter(lifespan=lifespan)
    if channels.enabled:
        router.add_api_websocket_route(channels.path, _endpoint(channels), name="fastapi_channels")
        route = router.routes[-1]
        route.app = _RefuseOnError(route.app)  # type: ignore[attr-defined]
    return router
