"""Inbound packets: decode, route to subscribe/unsubscribe or a handler, answer every failure.

Reserved events are looked at before channel routing (an unsubscribe request carries a
top-level ``channel`` too). Every failure a client can cause is answered with a
``subscribe-channel-response`` (``successful: false``) or a ``channels:error`` packet and
logged; it never escapes to the connection's reader or affects another connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi_channels.connection import SocketConnection
from fastapi_channels.errors import (
    BrokerError,
    ConfigurationError,
    ErrorCode,
    ProtocolError,
    Reject,
)
from fastapi_channels.extensions import ConnectionExtension
from fastapi_channels.limits import Limits
from fastapi_channels.listeners import Subscription, _current_subscription
from fastapi_channels.middleware import Middleware, MiddlewareContext, hooks_for, run_chain
from fastapi_channels.protocol import (
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
        extensions: Sequence[ConnectionExtension] = (),
    ) -> None:
        self.server = server
        self.registry = registry
        self.limits = limits
        self._connect_middleware = hooks_for(middleware, "connect")
        self._extensions = tuple(extensions)
        self._extension_events: dict[str, ConnectionExtension] = {}
        for extension in self._extensions:
            for event in extension.events:
                if event in self._extension_events or event in registry.events:
                    raise ConfigurationError(f"event {event!r} is handled twice")
                self._extension_events[event] = extension
        self._in_flight = 0
        self._draining: asyncio.Event | None = None

    async def drain(self, timeout: float) -> bool:
        """Stop handling new packets and wait for those being handled to finish.

        New packets are answered ``shutting-down``. Returns whether every in-flight packet
        finished within ``timeout`` seconds; those still running are left to the close.
        """
        self._draining = asyncio.Event()
        if self._in_flight == 0:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._draining.wait()
        except TimeoutError:
            logger.warning("%d packets still in flight at shutdown", self._in_flight)
            return False
        return True

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
            self._error(connection, exc.code, exc.message, None)
            return
        if self._draining is not None:
            self._error(connection, ErrorCode.SHUTTING_DOWN, "server shutting down", packet)
            return
        self._in_flight += 1
        try:
            await self._route(connection, packet)
        finally:
            self._in_flight -= 1
            if self._draining is not None and self._in_flight == 0:
                self._draining.set()

    async def _route(self, connection: SocketConnection, packet: SocketPacket) -> None:
        event = packet.event
        if event == SUBSCRIBE_REQUEST:
            await self._subscribe(connection, packet)
        elif event == UNSUBSCRIBE_REQUEST:
            await self._unsubscribe(connection, packet)
        elif event == PONG:
            return
        elif event in self._extension_events:
            await self._extension_event(connection, packet)
        elif packet.channel is not None:
            await self._channel_event(connection, packet)
        else:
            await self._plain_event(connection, packet)

    def reject_rate(self, connection: SocketConnection) -> None:
        """Answer a frame dropped by the rate limit."""
        self._error(connection, ErrorCode.RATE_LIMITED, "too many packets; slow down", None)

    def receive_bytes(self, connection: SocketConnection) -> None:
        """Answer a binary frame: packets travel in text frames only."""
        self._error(connection, ErrorCode.BINARY_FRAME, "only text frames carry packets", None)

    def opened(self, connection: SocketConnection) -> None:
        """Tell the extensions that ``connection`` is accepted and ``ready`` is queued."""
        for extension in self._extensions:
            extension.opened(connection)

    async def disconnect(self, connection: SocketConnection) -> None:
        """Forget everything about a connection that went away."""
        for extension in self._extensions:
            extension.closed(connection)
        await self.server.remove_connection(connection)

    async def _extension_event(self, connection: SocketConnection, packet: SocketPacket) -> None:
        try:
            await self._guard(self._extension_events[packet.event].handle(connection, packet))
        except Exception:
            logger.exception(
                "connection %s: extension event %r failed", connection.id, packet.event
            )
            self._error(connection, ErrorCode.HANDLER_ERROR, "handler failed", packet)

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
        started = time.perf_counter()
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
        except BrokerError as exc:  # an outage, not a bug: no traceback for every message
            logger.warning("connection %s: handler for %r: %s", connection.id, packet.event, exc)
            self._error(connection, ErrorCode.HANDLER_ERROR, "handler failed", packet)
        except Exception:
            logger.exception("connection %s: handler for %r failed", connection.id, packet.event)
            self._error(connection, ErrorCode.HANDLER_ERROR, "handler failed", packet)
        finally:
            self.server.stats.observe_handler(time.perf_counter() - started)

    async def _guard(self, step: Awaitable[Any]) -> Any:
        """Await ``step`` under the handler time limit."""
        timeout = self.limits.handler_timeout
        if timeout is None:
            return await step
        async with asyncio.timeout(timeout):
            return await step

    def _error(
        self,
        connection: SocketConnection,
        code: ErrorCode,
        message: str,
        packet: SocketPacket | None,
    ) -> None:
        self.server.stats.errors[code.value] += 1
        connection.push(encode_error(code, message, packet).decode())


async def _nothing() -> None:
    return None
