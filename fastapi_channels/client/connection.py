"""The asyncio client: one websocket to a fastapi_channels (or Envuso) server, kept alive.

`ChannelsClient` is the public face and owns the connection's life: it connects, runs one
reader task that reads every frame and routes it by event, and decides after each loss
whether to reconnect. Each concern it routes to is a part of its own:

- `_handshake`: one connection attempt (the token, its transport, the handshake, ``ready``);
- `_reconnect`: the attempts spaced by the `Backoff` policy;
- `_subscriptions`: the channels, the server's answers, history positions, presence members;
- `_delivery`: packet streams and callbacks, and the client's own ``channels:`` events;
- `_replies`: request ids and the requests waiting for their replies;
- `_renewal`: the timer that renews the token in-band before it expires.

Under failure: a lost connection fails the requests waiting for a reply (they are never sent
twice), puts every channel back to pending and reconnects with the backoff, asking the token
provider again before each attempt and subscribing again once ready. A refusal, a close code
the policy does not retry, or the policy giving up stops the client for good: subscriptions
still awaited fail with `ConnectionClosed` and every stream ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from enum import StrEnum
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed as WebSocketClosed

from fastapi_channels.client._delivery import Delivery
from fastapi_channels.client._handshake import (
    TokenProvider,
    TokenTransport,
    close_details,
    fetch_token,
    open_connection,
)
from fastapi_channels.client._reconnect import connect_with_backoff
from fastapi_channels.client._renewal import RenewalTimer, jwt_expiry
from fastapi_channels.client._replies import PendingRequests, new_key
from fastapi_channels.client._subscriptions import Subscriptions
from fastapi_channels.client.backoff import Backoff, advice_of, should_reconnect
from fastapi_channels.client.channel import Channel
from fastapi_channels.client.errors import ConnectionClosed, Refused, RenewalError
from fastapi_channels.client.listeners import Listeners
from fastapi_channels.client.packets import Packet, PacketStream, parse_packet
from fastapi_channels.wire.history import Position
from fastapi_channels.wire.protocol import (
    AUTHENTICATE,
    DISCONNECT,
    ERROR,
    JOIN,
    LEAVE,
    PING,
    PONG,
    PRESENCE,
    REPLY,
    SUBSCRIBE_RESPONSE,
    SUBSCRIBED,
    UNSUBSCRIBED,
)

__all__ = ["ChannelsClient", "ClientState", "TokenProvider", "TokenTransport"]

logger = logging.getLogger("fastapi_channels.client")

STATE = "channels:state"
"""The client's own event for each change of `ChannelsClient.state`."""
SUBSCRIPTION = "channels:subscription"
"""The client's own event for each answer to a subscription, first or after a reconnect."""
RENEWAL = "channels:renewal"
"""The client's own event for each outcome of an in-band token renewal."""

_MISSING: Any = object()


class ClientState(StrEnum):
    """Where the client is; the values are those of Envuso's client."""

    NONE = "none"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RE_CONNECTING = "re-connecting"


class ChannelsClient(Listeners):
    """A client of a fastapi_channels server.

    ``async with ChannelsClient(url, token=...) as client:`` connects and closes. Callbacks
    registered with `on` get plain events and the client's own ``channels:state`` and
    ``channels:subscription`` events; `packets` (or ``async for packet in client``)
    streams them.

    Args:
        url: the endpoint, e.g. ``ws://127.0.0.1:8000/ws``.
        token: a token, or a function (plain or ``async``) returning one, called before every
            connection attempt so that a reconnect uses a fresh token. ``None`` connects
            anonymously.
        token_transport: ``subprotocol`` (the token is the offered subprotocol, as the Envuso
            client sends it; the default), ``bearer`` (``bearer, <token>`` is offered and the
            server echoes only ``bearer``), ``header`` (``Authorization: Bearer``) or ``query``
            (``?token=``, which ends up in access logs).
        reconnect: the reconnect policy, ``True`` for the default `Backoff`, ``False``
            to never reconnect.
        open_timeout: seconds allowed for each attempt, handshake and ``ready`` together.
        request_timeout: the default wait for a reply or a subscription answer, in seconds.
        renew_before: with a token provider, renew the token in-band (`renew`) this many
            seconds before its ``exp`` (or at half its remaining life, if later); off by
            default.
        headers: extra handshake headers.
        connect_options: passed on to ``websockets.asyncio.client.connect`` (``proxy``,
            ``ping_interval``, ``max_size``...).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | TokenProvider | None = None,
        token_transport: TokenTransport = "subprotocol",
        reconnect: Backoff | bool = True,
        open_timeout: float = 10.0,
        request_timeout: float = 10.0,
        renew_before: float | None = None,
        headers: Mapping[str, str] | None = None,
        **connect_options: Any,
    ) -> None:
        super().__init__()
        self.url = url
        self.token = token
        self.token_transport = token_transport
        self.backoff: Backoff | None = (
            Backoff()
            if reconnect is True
            else reconnect
            if isinstance(reconnect, Backoff)
            else None
        )
        self.open_timeout = open_timeout
        self.request_timeout = request_timeout
        self.renew_before = renew_before
        self.headers = dict(headers or {})
        self.connect_options = connect_options
        self.id: str | None = None
        """The connection id from the server's ``ready``."""
        self.state = ClientState.NONE
        self.close_code: int | None = None
        """The close code of the last connection, once it ended."""
        self.close_reason = ""
        """The server's reason for the last close (its ``disconnect`` packet or close frame)."""
        self.error: BaseException | None = None
        """Why the client stopped for good, when it was not `close`."""
        self._ws: ClientConnection | None = None
        self._subscriptions = Subscriptions(self._send)
        self._delivery = Delivery(self, self._subscriptions)
        self._requests = PendingRequests()
        self._renewal = RenewalTimer(self.renew, lambda: self.connected)
        self._reader: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._disconnect_reason: str | None = None
        self._reconnect_after: float | None = None
        self._running = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ChannelsClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """Whether the connection is up and ready."""
        return self.state is ClientState.CONNECTED and self._ws is not None

    @property
    def channels(self) -> dict[str, Channel]:
        """The channels subscribed or being subscribed, by name."""
        return self._subscriptions.all()

    async def connect(self, *, retry: bool = False) -> None:
        """Connect and return once the server sent ``ready``.

        With ``retry=True`` a failed attempt (not a refusal) is retried with the backoff policy
        until one succeeds or the policy gives up. Once connected, a lost connection is
        re-established by the reader task on its own.

        Raises:
            Refused: the server refused the connection; it is not retried.
            ConnectFailed: the attempt (or, with ``retry``, every attempt) failed.
        """
        if self._reader is not None and not self._reader.done():
            raise RuntimeError("this client is already connected or connecting")
        self._stopping.clear()
        self.error = None
        self._set_state(ClientState.CONNECTING)
        try:
            if retry:
                await self._reconnect(wait_first=False)
            else:
                await self._open()
        except BaseException as exc:
            self.error = exc if isinstance(exc, Exception) else None
            self._set_state(ClientState.DISCONNECTED, reason=str(exc))
            raise
        self._running = True
        self._reader = asyncio.create_task(self._run(), name=f"fastapi_channels client {self.url}")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close for good (no reconnect) and wait until the reader has stopped.

        Pending requests and subscriptions fail with ``ConnectionClosed``; streams end.
        Channels and callbacks are kept, so a later `connect` subscribes again.
        """
        self._stopping.set()
        self._renewal.cancel()
        ws = self._ws
        reader, self._reader = self._reader, None
        if ws is not None:
            await ws.close(code, reason)
        elif reader is not None:
            reader.cancel()  # between connections: do not wait for an attempt to finish
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)
        else:
            self._finish(ConnectionClosed("the client is closed"))

    async def wait_closed(self) -> None:
        """Wait until the client stops for good (a refusal, a clean close, `close`)."""
        if self._reader is not None:
            await asyncio.shield(self._reader)

    # ------------------------------------------------------------------ subscriptions

    async def subscribe(
        self, name: str, *, since: Position | None = None, timeout: float | None = None
    ) -> Channel:
        """Subscribe to ``name`` and return the channel once the server grants it.

        Subscribing to a name twice returns the same channel. While the client reconnects the
        request is sent as soon as it is ready. ``since`` (a position kept from an earlier
        session) asks a history channel to replay what came after it; the client tracks the
        position from then on by itself.

        Raises:
            SubscriptionDenied: the server refused; the reason is in the exception.
            ConnectionClosed: the client is not running, or stopped before the answer.
            TimeoutError: no answer within ``timeout`` (default ``request_timeout``); the
                subscription stays pending and a later grant still takes effect.
        """
        if not name:
            raise ValueError("channel name must be a non-empty string")
        self._require_running()
        channel = self._subscriptions.get(name)
        if channel is not None and channel.state == "subscribed":
            return channel
        if channel is None:
            channel = Channel(self, name, since)
            self._subscriptions.add(channel)
        waiter = channel._wait()
        if self.connected and not channel._requested:
            await self._subscriptions.request(channel)
        async with asyncio.timeout(timeout if timeout is not None else self.request_timeout):
            granted = await asyncio.shield(waiter)
        # What came with the answer is delivered after the caller has added its callbacks.
        asyncio.get_running_loop().call_soon(self._delivery.release, granted)
        return granted

    async def unsubscribe(self, name: str) -> None:
        """Unsubscribe from ``name``; a no-op when not subscribed. Its callbacks are removed."""
        await self._subscriptions.remove(name, connected=self.connected)

    # ------------------------------------------------------------------ sending

    async def emit(self, event: str, data: Any = _MISSING, *, channel: str | None = None) -> None:
        """Send an event (a channel event with ``channel``); without ``data`` none is sent.

        Returns once the frame is written to the socket's buffer.

        Raises:
            ConnectionClosed: the client is not connected (also while reconnecting).
        """
        packet: dict[str, Any] = {"event": event}
        if channel is not None:
            packet["channel"] = channel
        if data is not _MISSING:
            packet["data"] = data
        await self._send(packet)

    async def request(
        self,
        event: str,
        data: Any = None,
        *,
        channel: str | None = None,
        timeout: float | None = None,
        key: str | None = None,
        retries: int = 0,
        retry_delay: float = 0.5,
    ) -> Any:
        """Send ``event`` with a fresh ``id`` and return the ``data`` of the server's reply.

        The reply is ``{"event": "channels:reply", "id": <id>, "data": ...}``; a reply with an
        ``error``, or a ``channels:error`` packet naming the id, fails the request.

        With ``retries``, the packet carries an idempotency ``key`` (the one given, else a fresh
        random one) and is sent again, with a new ``id`` and the same key, when the answer is
        ``outcome-unknown`` or ``broker-unavailable`` or no reply comes within ``timeout``, up to
        ``retries`` times (the n-th after ``retry_delay * n`` seconds). The server delivers the
        handler's broadcasts once per key, so a message is not delivered twice. A ``key``
        without retries is sent as it is (for retries the caller makes itself).

        Raises:
            ReplyError: the server answered with an error (``code``, ``message``, ``errors``):
                the last attempt's, with retries.
            TimeoutError: no reply within ``timeout`` (default ``request_timeout``).
            ConnectionClosed: not connected, or the connection was lost before the reply (the
                request is not sent again: it may or may not have been handled).
        """
        wait = timeout if timeout is not None else self.request_timeout
        if retries <= 0:
            return await self._requests.request(self._send, event, data, channel, wait, key)
        return await self._requests.retrying(
            self._send, event, data, channel, wait, key or new_key(), retries, retry_delay
        )

    async def renew(self, token: str | None = None) -> dict[str, Any]:
        """Renew the connection's token in-band, keeping the connection and its subscriptions.

        Sends ``channels:authenticate`` with ``token``, or a fresh one from the token provider,
        and returns the server's answer (``{"successful": True, "expires_at": ...}``). Each
        outcome is also a ``channels:renewal`` event.

        Raises:
            RenewalError: the server refused the token; the connection goes on with the old
                one until it expires (the server then closes with 4001 and the client
                reconnects, asking the provider).
            ValueError: there is no token to renew with.
            ConnectionClosed, TimeoutError: as `request`.
        """
        fresh = token if token is not None else await fetch_token(self.token)
        if fresh is None:
            raise ValueError("no token to renew with")
        answer = await self.request(AUTHENTICATE, {"token": fresh})
        successful = isinstance(answer, dict) and answer.get("successful") is True
        reason = None if successful else str((answer or {}).get("reason", "refused"))
        expires_at = answer.get("expires_at") if successful else None
        self._delivery.announce(
            RENEWAL, {"successful": successful, "reason": reason, "expires_at": expires_at}
        )
        if not successful:
            raise RenewalError(reason or "refused")
        self._renewal.schedule(expires_at, self._renew_before())
        return dict(answer)

    def packets(
        self, event: str | None = None, *, channel: str | None = None, maxsize: int = 1000
    ) -> PacketStream:
        """A stream of the packets that arrive from now on, optionally of one event or channel.

        Use it as ``async with client.packets(...) as stream`` or close it when done: an open
        stream keeps up to ``maxsize`` unread packets (dropping the oldest beyond).
        """
        ended = self.state is ClientState.DISCONNECTED and not self._running
        return self._delivery.stream(event, channel, maxsize, ended=ended)

    def __aiter__(self) -> PacketStream:
        return self.packets()

    # ------------------------------------------------------------------ connecting

    async def _open(self) -> None:
        """One attempt; once ``ready``, subscribe again and plan the token's renewal.

        Raises:
            Refused: the first packet was ``disconnect``.
            ConnectFailed: anything else went wrong before ``ready``.
        """
        token = await fetch_token(self.token)
        ws, ready = await open_connection(
            self.url,
            token,
            transport=self.token_transport,
            headers=self.headers,
            options=self.connect_options,
            timeout=self.open_timeout,
            retry=self.backoff.should_reconnect if self.backoff else should_reconnect,
        )
        self._ws = ws
        self.id = ready.get("id") if isinstance(ready, dict) else None
        self._disconnect_reason = None
        self._reconnect_after = None
        self._subscriptions.connection_opened()
        self._set_state(ClientState.CONNECTED, id=self.id)
        await self._subscriptions.resubscribe()
        self._renewal.schedule(jwt_expiry(token), self._renew_before())

    async def _reconnect(self, wait_first: bool, advised: float | None = None, **lost: Any) -> None:
        """Attempt until connected (see `connect_with_backoff`).

        ``advised`` is the server's ``reconnect_after``, waited (`Backoff.advised`) instead
        of the first backoff delay. ``lost`` (the close code and reason of a lost connection)
        goes into the first ``re-connecting`` state event.
        """

        def announce(attempt: int, delay: float) -> None:
            details = lost if attempt == 1 else {}
            self._set_state(ClientState.RE_CONNECTING, attempt=attempt, delay=delay, **details)

        backoff = self.backoff
        first = backoff.advised(advised) if backoff is not None and advised is not None else None
        await connect_with_backoff(
            self._open,
            backoff,
            self._stopping,
            announce,
            wait_first=wait_first,
            first_delay=first,
        )

    def _renew_before(self) -> float | None:
        """How long before expiry to renew; ``None`` (off) without a token provider."""
        return self.renew_before if callable(self.token) else None

    # ------------------------------------------------------------------ reading

    async def _run(self) -> None:
        """Read until the client stops for good, reconnecting in between."""
        reason: BaseException = ConnectionClosed("the client is closed")
        try:
            while True:
                ws = self._ws
                assert ws is not None
                code, close_reason = await self._read(ws)
                self._ws = None
                self._renewal.cancel()
                self.close_code, self.close_reason = code, close_reason
                self._requests.fail_all(
                    ConnectionClosed(f"connection lost ({code})", code, close_reason)
                )
                self._subscriptions.connection_lost()
                backoff = self.backoff
                if self._stopping.is_set() or backoff is None or not backoff.should_reconnect(code):
                    reason = ConnectionClosed(f"closed ({code})", code, close_reason)
                    self._set_state(ClientState.DISCONNECTED, code=code, reason=close_reason)
                    return
                logger.info("connection lost (%s %s), reconnecting", code, close_reason)
                advised, self._reconnect_after = self._reconnect_after, None
                try:
                    await self._reconnect(True, advised, code=code, reason=close_reason)
                except (Refused, ConnectionClosed) as exc:
                    reason = exc
                    if not self._stopping.is_set():
                        self.error = exc
                        logger.warning("reconnecting failed for good: %s", exc)
                    self._set_state(ClientState.DISCONNECTED, reason=str(exc), error=exc)
                    return
        finally:
            self._running = False
            ws, self._ws = self._ws, None
            if ws is not None:  # cancelled by close() while subscribing again
                await ws.close()
            self._finish(reason)

    async def _read(self, ws: ClientConnection) -> tuple[int, str]:
        """Handle frames until the connection ends; return its close code and reason."""
        try:
            while True:
                packet = parse_packet(await ws.recv())
                if packet is not None:
                    await self._handle(packet)
        except WebSocketClosed as exc:
            code, reason = close_details(exc)
            return code, self._disconnect_reason or reason

    async def _handle(self, packet: Packet) -> None:
        """Route one packet from the server by its event."""
        event = packet.event
        if event == SUBSCRIBE_RESPONSE:
            answered = self._subscriptions.answer(packet)
            if answered is not None:
                channel, subscription = answered
                if channel._held is not None:
                    self._delivery.release_later(channel)
                self._delivery.announce(SUBSCRIPTION, subscription)
            return
        if event in (PRESENCE, JOIN, LEAVE):
            self._subscriptions.presence(packet)
        if event == REPLY:
            if not self._requests.settle(packet.id, packet.data, packet.error):
                logger.warning("ignoring a reply to unknown request %r", packet.id)
            return
        if event == PING:
            await self._send({"event": PONG, "data": {}})
            return
        if event in (SUBSCRIBED, UNSUBSCRIBED):
            granted = self._subscriptions.by_server(packet, self)
            if granted is not None:  # its events wait until the callbacks below have run
                self._delivery.release_later(granted)
        elif event == DISCONNECT:
            data = packet.data if isinstance(packet.data, dict) else {}
            self._disconnect_reason = str(data.get("reason", ""))
            self._reconnect_after = advice_of(data)
        elif event == ERROR:
            data = packet.data if isinstance(packet.data, dict) else {}
            request_id = packet.id if packet.id is not None else data.get("id")
            if request_id is not None and self._requests.settle(request_id, None, data):
                return
            if self._delivery.unheard(ERROR):
                logger.warning("server error: %s", data.get("message", packet.data))
        self._delivery.deliver(packet)

    # ------------------------------------------------------------------ helpers

    def _require_running(self) -> None:
        if not self._running or self._stopping.is_set():
            raise ConnectionClosed("not connected: call connect() first")

    async def _send(self, packet: dict[str, Any]) -> None:
        """Write one packet to the current connection.

        Raises:
            ConnectionClosed: not connected, or the connection closed while writing.
        """
        ws = self._ws
        if ws is None or not self.connected:
            raise ConnectionClosed("not connected")
        try:
            await ws.send(json.dumps(packet, separators=(",", ":")))
        except WebSocketClosed as exc:
            code, _ = close_details(exc)
            raise ConnectionClosed("the connection closed", code) from exc

    def _finish(self, reason: BaseException) -> None:
        """Stop for good: fail what still waits, end the streams, report ``disconnected``."""
        self._ws = None
        self._requests.fail_all(ConnectionClosed(str(reason)))
        self._subscriptions.fail_waiting(str(reason))
        self._delivery.end()
        if self.state is not ClientState.DISCONNECTED:
            self._set_state(ClientState.DISCONNECTED)

    def _set_state(self, state: ClientState, **details: Any) -> None:
        previous, self.state = self.state, state
        if previous is state and "attempt" not in details:
            return
        self._delivery.announce(
            STATE, {"state": state.value, "previous": previous.value, **details}
        )
