"""Inbound packets: decode, route to subscribe/unsubscribe or a handler, answer every failure.

Reserved events are looked at before channel routing (an unsubscribe request carries a
top-level ``channel`` too). Every failure a client can cause is answered with a
``subscribe-channel-response`` (``successful: false``) or a ``channels:error`` packet and
logged; it never escapes to the connection's reader or affects another connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi_channels.connection import SocketConnection
from fastapi_channels.errors import ErrorCode, ProtocolError, Reject
from fastapi_channels.limits import Limits
from fastapi_channels.listeners import Subscription, _current_subscription
from fastapi_channels.middleware import Middleware, MiddlewareContext, hooks_for, run_chain
from fastapi_channels.protocol import (
    BATCH,
    PONG,
    SUBSCRIBE_REQUEST,
    SUBSCRIBE_RESPONSE,
    UNSUBSCRIBE_REQUEST,
    SocketPacket,
    decode_packet,
    encode,
    encode_error,
    validate_channel_name,
)
from fastapi_channels.registry import ListenerRegistry
from fastapi_channels.server import SocketServer

__all__ = ["Dispatcher"]

logger = logging.getLogger("fastapi_channels.dispatcher")

_UNAVAILABLE = "subscription refused"


class Dispatcher:
    """Routes each inbound frame of a connection; one call per frame, on its reader task."""

    def __init__(
        self,
        server: SocketServer,
        registry: ListenerRegistry,
        limits: Limits,
        middleware: Sequence[Middleware],
    ) -> None:
        self.server = server
        self.registry = registry
        self.limits = limits
        self._connect_middleware = hooks_for(middleware, "connect")

    async def connect(self, connection: SocketConnection) -> None:
        """Run the global ``connect`` middleware chain.

        Raises:
            Reject: a middleware refused; its reason goes to the client.
        """
        context = MiddlewareContext(connection=connection, stage="connect")
        await self._guard(run_chain(self._connect_middleware, context, _nothing))

    async def receive_text(self, connection: SocketConnection, text: str) -> None:
        """Handle one text frame. Never raises for anything the client sent."""
        try:
            packet = decode_packet(text, self.limits.max_name_length)
        except ProtocolError as exc:
            logger.info("connection %s: %s", connection.id, exc.message)
            connection.push(encode_error(exc.code, exc.message).decode())
            return
        event = packet.event
        if event == SUBSCRIBE_REQUEST:
            await self._subscribe(connection, packet)
        elif event == UNSUBSCRIBE_REQUEST:
            await self._unsubscribe(connection, packet)
        elif event == PONG:
            return
        elif event == BATCH:
            self._batch_option(connection, packet)
        elif packet.channel is not None:
            await self._channel_event(connection, packet)
        else:
            await self._plain_event(connection, packet)

    @staticmethod
    def _batch_option(connection: SocketConnection, packet: SocketPacket) -> None:
        """``channels:batch`` with ``{"enabled": true}``: answer, then batch what follows.

        The answer (``{"enabled": <bool>}``) is the last frame sent unbatched; a client that
        does not ask is never sent a batch. Batching cannot be turned off again.
        """
        data = packet.data
        wanted = isinstance(data, dict) and data.get("enabled") is True
        connection.push(encode(BATCH, {"enabled": wanted or connection.batching}).decode())
        if wanted:
            connection.enable_batching()

    def receive_bytes(self, connection: SocketConnection) -> None:
        """Answer a binary frame: packets travel in text frames only."""
        self._error(connection, ErrorCode.BINARY_FRAME, "only text frames carry packets", None)

    async def disconnect(self, connection: SocketConnection) -> None:
        """Forget everything about a connection that went away."""
        await self.server.remove_connection(connection)

    # ------------------------------------------------------------------ subscriptions

    async def _subscribe(self, connection: SocketConnection, packet: SocketPacket) -> None:
        data = packet.data
        requested = data.get("channel") if isinstance(data, dict) else None
        reason = await self._try_subscribe(connection, requested)
        response: dict[str, Any] = {"channel": requested, "successful": reason is None}
        if reason is not None:
            response["reason"] = reason
            logger.info("connection %s: subscribe %r refused: %s", connection.id, requested, reason)
        connection.push(encode(SUBSCRIBE_RESPONSE, response).decode())

    async def _try_subscribe(self, connection: SocketConnection, requested: object) -> str | None:
        """Subscribe; return None on success, else the reason sent to the client."""
        try:
            name = validate_channel_name(requested, self.limits.max_name_length)
        except ProtocolError as exc:
            return exc.message
        if name in connection.subscriptions:
            return None
        resolved = self.registry.channels.resolve(name)
        if resolved is None:
            return "no channel matches this name"
        route, wildcard = resolved
        if route.require_user and connection.user is None:
            return "authentication required"
        if len(connection.subscriptions) >= self.limits.max_subscriptions:
            return "too many subscriptions"
        subscription = Subscription(channel=name, wildcard=wildcard, route=route)
        context = MiddlewareContext(
            connection=connection, stage="subscribe", channel=name, wildcard=wildcard
        )

        async def authorise() -> None:
            if not await route.listener.is_authorised(connection, connection.user):
                raise Reject("not authorised")
            await self.server.add_subscription(connection, subscription)

        token = _current_subscription.set(subscription)
        try:
            await self._guard(run_chain(route.subscribe_middleware, context, authorise))
        except Reject as exc:
            return exc.reason
        except Exception:
            logger.exception("connection %s: subscribing to %r failed", connection.id, name)
            return _UNAVAILABLE
        finally:
            _current_subscription.reset(token)
        return None

    async def _unsubscribe(self, connection: SocketConnection, packet: SocketPacket) -> None:
        data = packet.data
        name = data.get("channel") if isinstance(data, dict) else None
        if name is None:
            name = packet.channel
        if isinstance(name, str):
            await self.server.remove_subscription(connection, name)
        else:
            self._error(connection, ErrorCode.INVALID_PACKET, "channel must be a string", packet)

    # ------------------------------------------------------------------ events

    async def _channel_event(self, connection: SocketConnection, packet: SocketPacket) -> None:
        subscription = connection.subscriptions.get(packet.channel)  # type: ignore[arg-type]
        if subscription is None:
            self._error(connection, ErrorCode.NOT_SUBSCRIBED, "not subscribed to channel", packet)
            return
        route = subscription.route
        handler = route.handlers.get(packet.event)
        if handler is None:
            self._error(connection, ErrorCode.UNKNOWN_EVENT, "no handler for event", packet)
            return
        token = _current_subscription.set(subscription)
        try:
            await self._run(
                connection,
                packet,
                handler,
                route.event_middleware,
                route.require_user,
                subscription,
            )
        finally:
            _current_subscription.reset(token)

    async def _plain_event(self, connection: SocketConnection, packet: SocketPacket) -> None:
        route = self.registry.events.get(packet.event)
        if route is None:
            self._error(connection, ErrorCode.UNKNOWN_EVENT, "no listener for event", packet)
            return
        await self._run(
            connection, packet, route.handler, route.event_middleware, route.require_user, None
        )

    async def _run(
        self,
        connection: SocketConnection,
        packet: SocketPacket,
        handler: Callable[[SocketConnection, Any, SocketPacket], Awaitable[Any]],
        middleware: tuple[Middleware, ...],
        require_user: bool,
        subscription: Subscription | None,
    ) -> None:
        if require_user and connection.user is None:
            self._error(connection, ErrorCode.UNAUTHENTICATED, "authentication required", packet)
            return
        try:
            if middleware:
                context = MiddlewareContext(
                    connection=connection,
                    stage="event",
                    channel=packet.channel,
                    wildcard=subscription.wildcard if subscription else None,
                    packet=packet,
                )

                async def call() -> None:
                    await handler(connection, connection.user, packet)

                await self._guard(run_chain(middleware, context, call))
            else:
                await self._guard(handler(connection, connection.user, packet))
        except Reject as exc:
            self._error(connection, ErrorCode.REJECTED, exc.reason, packet)
        except TimeoutError:
            logger.error(
                "connection %s: handler for %r timed out after %ss",
                connection.id,
                packet.event,
                self.limits.handler_timeout,
            )
            self._error(connection, ErrorCode.HANDLER_TIMEOUT, "handler timed out", packet)
        except Exception:
            logger.exception("connection %s: handler for %r failed", connection.id, packet.event)
            self._error(connection, ErrorCode.HANDLER_ERROR, "handler failed", packet)

    async def _guard(self, step: Awaitable[Any]) -> Any:
        """Await ``step`` under the handler time limit."""
        timeout = self.limits.handler_timeout
        if timeout is None:
            return await step
        async with asyncio.timeout(timeout):
            return await step

    @staticmethod
    def _error(
        connection: SocketConnection, code: ErrorCode, message: str, packet: SocketPacket | None
    ) -> None:
        connection.push(encode_error(code, message, packet).decode())


async def _nothing() -> None:
    return None
