"""Inbound packets: decode, route to subscribe/unsubscribe or a handler, answer every failure.

Reserved events are looked at before channel routing (an unsubscribe request carries a
top-level ``channel`` too). Every failure a client can cause is answered with a
``subscribe-channel-response`` (``successful: false``) or a ``channels:error`` packet and
logged; it never escapes to the connection's reader or affects another connection.

A subscribe request may carry ``since`` (the last position the client saw on a history
channel); a new subscriber of a presence or history channel is caught up (member list, missed
messages) right after the response, before any live frame of that channel.

A packet that carries an ``id`` is answered exactly once with a ``channels:reply`` carrying it:
the handler's return value, or the error that would otherwise have been a ``channels:error``
packet. A subscribe request with an ``id`` gets its reply besides the Envuso response. Packets
without an ``id`` are answered exactly as Envuso's protocol says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import CoroutineType
from typing import Any

from fastapi_channels.app.extensions import ConnectionExtension
from fastapi_channels.app.invocation import BoundHandler
from fastapi_channels.app.middleware import Middleware, MiddlewareContext, hooks_for, run_chain
from fastapi_channels.app.registry import ListenerRegistry
from fastapi_channels.core._stepping import resume
from fastapi_channels.core.catchup import CaughtUp
from fastapi_channels.core.channel import Subscription, current_subscription
from fastapi_channels.core.connection import SocketConnection
from fastapi_channels.core.idempotency import PacketKey, current_key
from fastapi_channels.core.server import SocketServer
from fastapi_channels.wire.errors import (
    BrokerError,
    ConfigurationError,
    ErrorCode,
    HistoryFull,
    InvalidData,
    OutcomeUnknown,
    ProtocolError,
    Reject,
)
from fastapi_channels.wire.history import Position, parse_since
from fastapi_channels.wire.limits import Limits
from fastapi_channels.wire.protocol import (
    BATCH,
    PONG,
    SUBSCRIBE_REQUEST,
    SUBSCRIBE_RESPONSE,
    UNSUBSCRIBE_REQUEST,
    PacketId,
    SocketPacket,
    decode_packet,
    encode,
    encode_error,
    encode_reply,
    encode_reply_error,
    peek_id,
    validate_channel_name,
)
from fastapi_channels.wire.text import printable

__all__ = ["Dispatcher"]

logger = logging.getLogger("fastapi_channels.dispatcher")

_UNAVAILABLE = "subscription refused"


@dataclass(frozen=True, slots=True)
class _Refusal:
    """Why a subscription was refused: the Envuso ``reason`` and the reply's error code."""

    code: ErrorCode
    reason: str
    errors: list[dict[str, Any]] | None = None


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
        if not self._connect_middleware:
            return
        context = MiddlewareContext(connection=connection, stage="connect")
        await self._guard(run_chain(self._connect_middleware, context, _nothing))

    async def receive_text(self, connection: SocketConnection, text: str) -> None:
        """Handle one text frame. Never raises for anything the client sent."""
        try:
            packet = decode_packet(text, self.limits.max_name_length)
        except ProtocolError as exc:
            logger.info("connection %s: %s", connection.id, printable(exc.message))
            self._error(connection, exc.code, exc.message, None, packet_id=exc.packet_id)
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
            self._reply(connection, packet, None)
        elif event == BATCH:
            self._batch_option(connection, packet)
        elif event in self._extension_events:
            await self._extension_event(connection, packet)
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

    def reject_rate(self, connection: SocketConnection, text: str | None = None) -> None:
        """Answer a frame dropped by the rate limit (with a reply if ``text`` has an ``id``)."""
        packet_id = peek_id(text) if text is not None else None
        message = "too many packets; slow down"
        self._error(connection, ErrorCode.RATE_LIMITED, message, None, packet_id=packet_id)

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
            result = await self._guard(
                self._extension_events[packet.event].handle(connection, packet)
            )
        except Exception:
            logger.exception(
                "connection %s: extension event %r failed", connection.id, packet.event
            )
            self._error(connection, ErrorCode.HANDLER_ERROR, "handler failed", packet)
        else:
            self._reply(connection, packet, result)

    # ------------------------------------------------------------------ subscriptions

    async def _subscribe(self, connection: SocketConnection, packet: SocketPacket) -> None:
        data = packet.data
        requested = data.get("channel") if isinstance(data, dict) else None
        caught: CaughtUp | None = None
        try:
            since = parse_since(data.get("since") if isinstance(data, dict) else None)
        except ProtocolError as exc:
            refusal: _Refusal | None = _Refusal(exc.code, exc.message)
        else:
            refusal = await self._try_subscribe(connection, requested, packet)
            caught = await self._catch_up(connection, requested, since, refusal)
        response: dict[str, Any] = {"channel": requested, "successful": refusal is None}
        if refusal is not None:
            response["reason"] = refusal.reason
            logger.info(
                "connection %s: subscribe %r refused: %s",
                connection.id,
                requested,
                printable(refusal.reason),
            )
        extra = caught.fields if caught is not None else {}
        connection.push(encode(SUBSCRIBE_RESPONSE, {**response, **extra}).decode())
        if packet.id is not None:
            if refusal is None:
                self._reply(connection, packet, {"channel": requested, **extra})
            else:  # counted as a refused subscription, not as an error packet
                frame = encode_reply_error(packet.id, refusal.code, refusal.reason, refusal.errors)
                connection.push(frame.decode())
        if caught is not None:
            caught.finish(connection)

    async def _catch_up(
        self,
        connection: SocketConnection,
        requested: object,
        since: Position | None,
        refusal: _Refusal | None,
    ) -> CaughtUp | None:
        """What a new subscriber of a presence or history channel gets before live frames.

        Never raises: on a failure the held frames are sent as they are.
        """
        if not isinstance(requested, str):
            return None
        subscription = connection.subscriptions.get(requested)
        if subscription is None or subscription.spec.catch_up is None:
            return None
        if refusal is not None:  # refused after subscribing (middleware raised late)
            self.server.release(connection, requested)
            return None
        try:
            caught: CaughtUp | None = await self._guard(
                self.server.catch_up(connection, subscription, since)
            )
        except Exception:
            logger.exception("connection %s: catching up on %r failed", connection.id, requested)
            self.server.release(connection, requested)
            return None
        return caught

    async def _try_subscribe(
        self, connection: SocketConnection, requested: object, packet: SocketPacket
    ) -> _Refusal | None:
        """Subscribe; return None on success, else why (the reason is sent to the client)."""
        try:
            name = validate_channel_name(requested, self.limits.max_name_length)
        except ProtocolError as exc:
            return _Refusal(exc.code, exc.message)
        if name in connection.subscriptions:
            return None
        resolved = self.registry.channels.resolve(name)
        if resolved is None:
            return _Refusal(ErrorCode.UNKNOWN_CHANNEL, "no channel matches this name")
        route, wildcard = resolved
        if route.require_user and connection.user is None:
            return _Refusal(ErrorCode.UNAUTHENTICATED, "authentication required")
        if len(connection.subscriptions) >= self.limits.max_subscriptions:
            return _Refusal(ErrorCode.TOO_MANY_SUBSCRIPTIONS, "too many subscriptions")
        try:
            is_authorised = (
                None if route.authorise is None else route.authorise.prepare(connection, packet)
            )
        except InvalidData as exc:
            return _Refusal(exc.code, "invalid data", exc.errors)
        subscription = Subscription(channel=name, wildcard=wildcard, spec=route.spec)
        denied = False

        async def authorise() -> None:
            nonlocal denied
            if not await self._admit(connection, subscription, is_authorised):
                denied = True
                raise Reject("not authorised")

        token = current_subscription.set(subscription)
        try:
            if not route.subscribe_middleware:  # no chain to run: nothing to build for it
                if not await self._guard(self._admit(connection, subscription, is_authorised)):
                    return _Refusal(ErrorCode.NOT_AUTHORISED, "not authorised")
            else:
                context = MiddlewareContext(
                    connection=connection, stage="subscribe", channel=name, wildcard=wildcard
                )
                await self._guard(run_chain(route.subscribe_middleware, context, authorise))
        except Reject as exc:
            return _Refusal(ErrorCode.NOT_AUTHORISED if denied else ErrorCode.REJECTED, exc.reason)
        except TimeoutError:
            logger.error("connection %s: subscribing to %r timed out", connection.id, name)
            return _Refusal(ErrorCode.HANDLER_TIMEOUT, _UNAVAILABLE)
        except Exception:
            logger.exception("connection %s: subscribing to %r failed", connection.id, name)
            return _Refusal(ErrorCode.HANDLER_ERROR, _UNAVAILABLE)
        finally:
            current_subscription.reset(token)
        return None

    async def _admit(
        self,
        connection: SocketConnection,
        subscription: Subscription,
        is_authorised: Callable[[], Awaitable[Any]] | None,
    ) -> bool:
        """Ask ``is_authorised`` (None: the default, which allows); if it allows, subscribe.

        Returns whether it allowed.
        """
        if is_authorised is not None and not await is_authorised():
            return False
        await self.server.add_subscription(connection, subscription)
        return True

    async def _unsubscribe(self, connection: SocketConnection, packet: SocketPacket) -> None:
        data = packet.data
        name = data.get("channel") if isinstance(data, dict) else None
        if name is None:
            name = packet.channel
        if isinstance(name, str):
            removed = await self.server.remove_subscription(connection, name)
            self._reply(connection, packet, {"channel": name, "was_subscribed": removed})
        else:
            self._error(connection, ErrorCode.INVALID_PACKET, "channel must be a string", packet)

    # ------------------------------------------------------------------ events

    async def _channel_event(self, connection: SocketConnection, packet: SocketPacket) -> None:
        subscription = connection.subscriptions.get(packet.channel)  # type: ignore[arg-type]
        if subscription is None:
            self._error(connection, ErrorCode.NOT_SUBSCRIBED, "not subscribed to channel", packet)
            return
        route = self.registry.route_of(subscription.spec)
        handler = route.handlers.get(packet.event)
        if handler is None:
            self._error(connection, ErrorCode.UNKNOWN_EVENT, "no handler for event", packet)
            return
        token = current_subscription.set(subscription)
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
            current_subscription.reset(token)

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
        handler: BoundHandler,
        middleware: tuple[Middleware, ...],
        require_user: bool,
        subscription: Subscription | None,
    ) -> None:
        if require_user and connection.user is None:
            self._error(connection, ErrorCode.UNAUTHENTICATED, "authentication required", packet)
            return
        started = time.perf_counter()
        try:
            call = handler.prepare(connection, packet)
        except InvalidData as exc:
            logger.info("connection %s: invalid data for %r", connection.id, packet.event)
            self._error(connection, exc.code, exc.message, packet, exc.errors)
            return
        result: Any = None
        keyed = current_key.set(PacketKey(packet.key)) if packet.key is not None else None
        try:
            if middleware:
                context = MiddlewareContext(
                    connection=connection,
                    stage="event",
                    channel=packet.channel,
                    wildcard=subscription.wildcard if subscription else None,
                    packet=packet,
                )

                async def final() -> None:
                    nonlocal result
                    result = await call()

                await self._guard(run_chain(middleware, context, final))
            else:
                result = await self._guard(call())
        except Reject as exc:
            self._error(connection, ErrorCode.REJECTED, exc.reason, packet)
        except InvalidData as exc:
            self._error(connection, exc.code, exc.message, packet, exc.errors)
        except TimeoutError:
            logger.error(
                "connection %s: handler for %r timed out after %ss",
                connection.id,
                packet.event,
                self.limits.handler_timeout,
            )
            self._error(connection, ErrorCode.HANDLER_TIMEOUT, "handler timed out", packet)
        except HistoryFull as exc:  # a bound the operator set, not an outage
            logger.info("connection %s: handler for %r: %s", connection.id, packet.event, exc)
            message = "this channel cannot keep history: too many channels keep some already"
            self._error(connection, ErrorCode.HISTORY_FULL, message, packet)
        except OutcomeUnknown as exc:  # a stall: the send may have happened
            logger.warning("connection %s: handler for %r: %s", connection.id, packet.event, exc)
            message = "message broker did not confirm in time; retry with the same key"
            self._error(connection, ErrorCode.OUTCOME_UNKNOWN, message, packet)
        except BrokerError as exc:  # an outage, not a bug: no traceback for every message
            logger.warning("connection %s: handler for %r: %s", connection.id, packet.event, exc)
            message = "message broker unavailable; try again later"
            self._error(connection, ErrorCode.BROKER_UNAVAILABLE, message, packet)
        except Exception:
            logger.exception("connection %s: handler for %r failed", connection.id, packet.event)
            self._error(connection, ErrorCode.HANDLER_ERROR, "handler failed", packet)
        else:
            self._reply(connection, packet, result)
        finally:
            if keyed is not None:
                current_key.reset(keyed)
            self.server.stats.observe_handler(time.perf_counter() - started)

    async def _guard(self, step: Awaitable[Any]) -> Any:
        """Await ``step`` under the handler time limit.

        The step's first part runs in place: a step that completes without suspending (most
        do) needs no timer. One that suspends finishes under a deadline counted from its start.
        """
        timeout = self.limits.handler_timeout
        if timeout is None:
            return await step
        if not isinstance(step, CoroutineType):
            async with asyncio.timeout(timeout):
                return await step
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            waiting = step.send(None)
        except StopIteration as done:
            return done.value
        async with asyncio.timeout_at(deadline):
            return await resume(step, waiting)

    def _error(
        self,
        connection: SocketConnection,
        code: ErrorCode,
        message: str,
        packet: SocketPacket | None,
        errors: list[dict[str, Any]] | None = None,
        *,
        packet_id: PacketId | None = None,
    ) -> None:
        """Answer a failure: a reply when the packet has an ``id``, else ``channels:error``.

        ``packet_id`` stands in for the id of a packet that could not be decoded.
        """
        self.server.stats.errors[code.value] += 1
        if packet is not None:
            packet_id = packet.id
        if packet_id is not None:
            frame = encode_reply_error(packet_id, code, message, errors)
        else:
            frame = encode_error(code, message, packet, errors)
        connection.push(frame.decode())

    @staticmethod
    def _reply(connection: SocketConnection, packet: SocketPacket, value: Any) -> None:
        """Answer a success with ``value`` when the packet has an ``id``; else send nothing.

        A value that cannot be serialised is logged and answered as ``handler-error``.
        """
        if packet.id is None:
            return
        try:
            frame = encode_reply(packet.id, value)
        except Exception:
            logger.exception(
                "connection %s: the reply to %r cannot be serialised", connection.id, packet.event
            )
            frame = encode_reply_error(packet.id, ErrorCode.HANDLER_ERROR, "handler failed")
        connection.push(frame.decode())


async def _nothing() -> None:
    return None
