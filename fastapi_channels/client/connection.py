"""The asyncio client: one websocket to a fastapi_channels (or Envuso) server, kept alive.

One reader task per client reads every frame, answers subscriptions and replies, runs
callbacks and feeds packet streams. When the connection is lost it reconnects with the
`Backoff` policy, asks the token provider again before
each attempt, and subscribes again to every channel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WebSocketClosed
from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from fastapi_channels.client.backoff import Backoff, should_reconnect
from fastapi_channels.client.channel import Channel
from fastapi_channels.client.errors import (
    ConnectFailed,
    ConnectionClosed,
    Refused,
    RenewalError,
    ReplyError,
)
from fastapi_channels.client.listeners import Listeners
from fastapi_channels.client.packets import Packet, PacketStream, parse_packet, parse_position
from fastapi_channels.wire.history import Position, position_data

__all__ = ["ChannelsClient", "ClientState", "TokenProvider", "TokenTransport"]

logger = logging.getLogger("fastapi_channels.client")

TokenProvider = Callable[[], str | None] | Callable[[], Awaitable[str | None]]
TokenTransport = Literal["subprotocol", "bearer", "header", "query"]

READY = "ready"
DISCONNECT = "disconnect"
SUBSCRIBE_REQUEST = "subscribe-channel-request"
SUBSCRIBE_RESPONSE = "subscribe-channel-response"
UNSUBSCRIBE_REQUEST = "unsubscribe-channel-request"
PING = "ping"
PONG = "pong"
ERROR = "channels:error"
REPLY = "channels:reply"
"""The reply packet: ``{"event": "channels:reply", "id": <id>, "data": ..., "error"?: {...}}``."""
AUTHENTICATE = "channels:authenticate"
"""In-band renewal, ``data: {"token": ...}``; the reply: ``successful``, ``expires_at``."""
PRESENCE = "channels:presence"
"""A presence channel's member list, ``data: {"channel", "members"}``, after subscribing."""
JOIN = "channels:join"
LEAVE = "channels:leave"
STATE = "channels:state"
SUBSCRIPTION = "channels:subscription"
RENEWAL = "channels:renewal"

_MISSING: Any = object()
_ABNORMAL = 1006


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
        self._renewal: asyncio.TimerHandle | None = None
        self._renewing: asyncio.Task[None] | None = None
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
        self._channels: dict[str, Channel] = {}
        self._leaving: set[str] = set()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._sequence = 0
        self._streams: set[PacketStream] = set()
        self._reader: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._disconnect_reason: str | None = None
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
        return dict(self._channels)

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
                await self._connect_with_backoff(wait_first=False)
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
        self._cancel_renewal()
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
        channel = self._channels.get(name)
        if channel is not None and channel.state == "subscribed":
            return channel
        if channel is None:
            channel = self._channels[name] = Channel(self, name, since)
            self._leaving.discard(name)
        waiter = channel._wait()
        if self.connected and not channel._requested:
            await self._send_subscribe(channel)
        async with asyncio.timeout(timeout if timeout is not None else self.request_timeout):
            granted = await asyncio.shield(waiter)
        # What came with the answer is delivered after the caller has added its callbacks.
        asyncio.get_running_loop().call_soon(self._release, granted)
        return granted

    async def unsubscribe(self, name: str) -> None:
        """Unsubscribe from ``name``; a no-op when not subscribed. Its callbacks are removed."""
        channel = self._channels.pop(name, None)
        if channel is None:
            return
        channel._callbacks.clear()
        channel._settle(False, "unsubscribed")
        channel.state = "unsubscribed"
        if self.connected:
            self._leaving.add(name)
            await self._send(
                {"event": UNSUBSCRIBE_REQUEST, "channel": name, "data": {"channel": name}}
            )

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
    ) -> Any:
        """Send ``event`` with a fresh ``id`` and return the ``data`` of the server's reply.

        The reply is ``{"event": "channels:reply", "id": <id>, "data": ...}``; a reply with an
        ``error``, or a ``channels:error`` packet naming the id, fails the request.

        Raises:
            ReplyError: the server answered with an error.
            TimeoutError: no reply within ``timeout`` (default ``request_timeout``).
            ConnectionClosed: not connected, or the connection was lost before the reply (the
                request is not sent again: it may or may not have been handled).
        """
        self._sequence += 1
        request_id = self._sequence
        packet: dict[str, Any] = {"event": event, "data": data, "id": request_id}
        if channel is not None:
            packet["channel"] = channel
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._send(packet)
            async with asyncio.timeout(timeout if timeout is not None else self.request_timeout):
                return await future
        finally:
            self._pending.pop(request_id, None)

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
        fresh = token if token is not None else await self._token()
        if fresh is None:
            raise ValueError("no token to renew with")
        answer = await self.request(AUTHENTICATE, {"token": fresh})
        successful = isinstance(answer, dict) and answer.get("successful") is True
        reason = None if successful else str((answer or {}).get("reason", "refused"))
        expires_at = answer.get("expires_at") if successful else None
        self._emit_local(
            RENEWAL, {"successful": successful, "reason": reason, "expires_at": expires_at}
        )
        if not successful:
            raise RenewalError(reason or "refused")
        self._schedule_renewal(expires_at)
        return dict(answer)

    def packets(
        self, event: str | None = None, *, channel: str | None = None, maxsize: int = 1000
    ) -> PacketStream:
        """A stream of the packets that arrive from now on, optionally of one event or channel.

        Use it as ``async with client.packets(...) as stream`` or close it when done: an open
        stream keeps up to ``maxsize`` unread packets (dropping the oldest beyond).
        """
        stream = PacketStream(event, channel, maxsize, on_close=self._streams.discard)
        if self.state is ClientState.DISCONNECTED and not self._running:
            stream.close()
        else:
            self._streams.add(stream)
        return stream

    def __aiter__(self) -> PacketStream:
        return self.packets()

    # ------------------------------------------------------------------ connecting

    async def _token(self) -> str | None:
        token = self.token
        try:
            value: Any = token() if callable(token) else token
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            raise ConnectFailed(f"the token provider failed: {exc!r}") from exc
        return None if value in (None, "", "null", "undefined") else str(value)

    def _handshake(self, token: str | None) -> tuple[str, list[Subprotocol], dict[str, str]]:
        url, headers = self.url, dict(self.headers)
        subprotocols: list[Subprotocol] = []
        if token is not None:
            if self.token_transport == "subprotocol":
                subprotocols = [Subprotocol(token)]
            elif self.token_transport == "bearer":
                subprotocols = [Subprotocol("bearer"), Subprotocol(token)]
            elif self.token_transport == "header":
                headers["Authorization"] = f"Bearer {token}"
            elif self.token_transport == "query":
                parts = urlsplit(url)
                query = [*parse_qsl(parts.query), ("token", token)]
                url = urlunsplit(parts._replace(query=urlencode(query)))
            else:
                raise ValueError(f"unknown token transport {self.token_transport!r}")
        return url, subprotocols, headers

    async def _open(self) -> None:
        """One attempt: handshake, then wait for ``ready``; subscribe again once ready.

        Raises:
            Refused: the first packet was ``disconnect``.
            ConnectFailed: anything else went wrong before ``ready``.
        """
        token = await self._token()
        url, subprotocols, headers = self._handshake(token)
        try:
            async with asyncio.timeout(self.open_timeout):
                ws = await connect(
                    url,
                    subprotocols=subprotocols or None,
                    additional_headers=headers or None,
                    open_timeout=None,
                    **self.connect_options,
                )
        except InvalidURI:
            raise
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ConnectFailed(f"cannot connect to {self.url}: {exc}", code=_ABNORMAL) from exc
        try:
            ready = await self._await_ready(ws)
        except BaseException:
            await ws.close()
            raise
        self._ws = ws
        self.id = ready.get("id") if isinstance(ready, dict) else None
        self._disconnect_reason = None
        self._leaving.clear()
        for channel in self._channels.values():
            channel._requested = False
            if channel.state == "subscribed":
                channel.state = "pending"
        self._set_state(ClientState.CONNECTED, id=self.id)
        for channel in list(self._channels.values()):
            await self._send_subscribe(channel)
        self._schedule_renewal(_jwt_expiry(token))

    async def _await_ready(self, ws: ClientConnection) -> Any:
        """Return ``ready``'s data; a ``disconnect`` first is a refusal, final or not.

        A refusal is final when the close that follows is one the reconnect rule does not
        retry (1000, 1008); ``server busy`` closed with 1013 is worth another attempt.
        """
        refusal: str | None = None
        try:
            async with asyncio.timeout(self.open_timeout):
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
            code = exc.rcvd.code if exc.rcvd else _ABNORMAL
            if refusal is None:
                raise ConnectFailed(f"closed before ready ({code})", code=code) from exc
            retry = self.backoff.should_reconnect if self.backoff else should_reconnect
            if retry(code):
                raise ConnectFailed(f"refused for now: {refusal}", code, refusal) from exc
            raise Refused(refusal, code) from None
        except TimeoutError as exc:
            if refusal is not None:
                raise Refused(refusal) from None
            raise ConnectFailed("no ready packet in time", code=_ABNORMAL) from exc

    async def _connect_with_backoff(self, wait_first: bool, **lost: Any) -> None:
        """Attempt until connected, waiting the backoff delay before each retry.

        ``lost`` (the close code and reason of a lost connection) goes into the first
        ``re-connecting`` state event.

        Raises:
            Refused: an attempt was refused.
            ConnectFailed: the policy gave up (or there is none).
            ConnectionClosed: `close` was called meanwhile.
        """
        backoff = self.backoff
        step = failures = 0
        wait = wait_first
        while True:
            if wait and backoff is not None:
                delay = backoff.delay(step)
                step += 1
                self._set_state(ClientState.RE_CONNECTING, attempt=step, delay=delay, **lost)
                lost = {}
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                raise ConnectionClosed("closed by the client")
            try:
                await self._open()
                return
            except ConnectFailed as exc:
                failures += 1
                if backoff is None or backoff.gives_up_after(failures):
                    raise
                logger.info("connection attempt %d failed: %s", failures, exc)
            wait = True

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
                self._cancel_renewal()
                self.close_code, self.close_reason = code, close_reason
                self._fail_pending(
                    ConnectionClosed(f"connection lost ({code})", code, close_reason)
                )
                for channel in self._channels.values():
                    channel._requested = False
                    if channel.state == "subscribed":
                        channel.state = "pending"
                backoff = self.backoff
                if self._stopping.is_set() or backoff is None or not backoff.should_reconnect(code):
                    reason = ConnectionClosed(f"closed ({code})", code, close_reason)
                    self._set_state(ClientState.DISCONNECTED, code=code, reason=close_reason)
                    return
                logger.info("connection lost (%s %s), reconnecting", code, close_reason)
                try:
                    await self._connect_with_backoff(
                        wait_first=True, code=code, reason=close_reason
                    )
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
            code = exc.rcvd.code if exc.rcvd else _ABNORMAL
            reason = exc.rcvd.reason if exc.rcvd else ""
            return code, self._disconnect_reason or reason

    async def _handle(self, packet: Packet) -> None:
        event = packet.event
        if event == SUBSCRIBE_RESPONSE:
            self._on_subscribe_response(packet)
            return
        if event in (PRESENCE, JOIN, LEAVE):
            self._on_presence(packet)
        if event == REPLY:
            if not self._settle(packet.id, packet.data, packet.error):
                logger.warning("ignoring a reply to unknown request %r", packet.id)
            return
        if event == PING:
            await self._send({"event": PONG, "data": {}})
            return
        if event == DISCONNECT:
            data = packet.data if isinstance(packet.data, dict) else {}
            self._disconnect_reason = str(data.get("reason", ""))
        elif event == ERROR:
            data = packet.data if isinstance(packet.data, dict) else {}
            request_id = packet.id if packet.id is not None else data.get("id")
            if request_id is not None and self._settle(request_id, None, data):
                return
            if not self._has_callbacks(ERROR) and not self._streams:
                logger.warning("server error: %s", data.get("message", packet.data))
        self._deliver(packet)

    def _deliver(self, packet: Packet) -> None:
        if packet.channel is not None:
            channel = self._channels.get(packet.channel)
            if channel is not None and channel._held is not None:
                channel._held.append(packet)
                return
        for stream in list(self._streams):
            if stream.matches(packet):
                stream.put(packet)
        if packet.channel is None:
            self._dispatch(packet)
            return
        channel = self._channels.get(packet.channel)
        if channel is not None:
            if packet.position is not None:
                channel.position = packet.position
            if not channel._dispatch(packet) and not self._streams:
                logger.warning("no callback for %r on %s", packet.event, packet.channel)
        elif packet.channel not in self._leaving:
            logger.warning("ignoring %r for %s, not subscribed", packet.event, packet.channel)

    def _on_subscribe_response(self, packet: Packet) -> None:
        data = packet.data if isinstance(packet.data, dict) else {}
        name = data.get("channel")
        channel = self._channels.get(name) if isinstance(name, str) else None
        if channel is None:
            if name not in self._leaving:
                logger.warning("ignoring a subscription answer for unknown channel %r", name)
            return
        channel._requested = False
        successful = bool(data.get("successful"))
        reason = str(data.get("reason") or "")
        history: dict[str, Any] = {}
        if successful and "position" in data:
            channel.position = parse_position(data["position"])
            history["position"] = data["position"]
        if "recovered" in data:
            channel.recovered = data["recovered"] is True
            history["recovered"] = channel.recovered
            if not channel.recovered:
                logger.info("%s: missed events could not be replayed", channel.name)
        awaited = channel._settle(successful, reason or "refused")
        if channel._held is not None:
            # The events read with this answer (a replay, live events) are held for the
            # callbacks and streams the code awaiting ``subscribe()`` adds when it resumes:
            # ``subscribe()`` releases them just before returning to it. This later release is
            # for an answer nobody awaits any more (a timed-out ``subscribe()``): the waiter's
            # result reaches the awaiting task through the shield one loop turn later, so the
            # task has run by the time this runs.
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._release, channel)
        if not successful:
            del self._channels[channel.name]
            if not awaited:
                logger.warning("subscribing again to %s was refused: %s", channel.name, reason)
        self._emit_local(
            SUBSCRIPTION,
            {
                "channel": channel.name,
                "successful": successful,
                "reason": reason or None,
                "resubscribed": not awaited,
                **history,
            },
        )

    def _release(self, channel: Channel) -> None:
        held, channel._held = channel._held, None
        if held and self._channels.get(channel.name) is channel:
            for packet in held:
                self._deliver(packet)

    def _on_presence(self, packet: Packet) -> None:
        """Keep the channel's `members` and pass the event to its callbacks."""
        data = packet.data if isinstance(packet.data, dict) else {}
        name = data.get("channel")
        channel = self._channels.get(name) if isinstance(name, str) else None
        if channel is None:
            return
        if packet.event == PRESENCE:
            listed = data.get("members")
            if isinstance(listed, list):
                channel.members = {
                    m.get("id"): m for m in listed if isinstance(m, dict) and "id" in m
                }
        else:
            member = data.get("member")
            if isinstance(member, dict) and "id" in member:
                if packet.event == JOIN:
                    channel.members[member["id"]] = member
                else:
                    channel.members.pop(member["id"], None)
        channel._dispatch(packet)

    # ------------------------------------------------------------------ helpers

    def _schedule_renewal(self, expires_at: Any) -> None:
        """Plan the next automatic renewal, when ``renew_before`` and a provider are set."""
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        if self.renew_before is None or not callable(self.token):
            return
        if not isinstance(expires_at, int | float):
            return
        remaining = expires_at - time.time()
        if remaining <= 0:
            return
        # never sooner than half the remaining life: a short token must not renew in a loop
        delay = max(remaining - self.renew_before, remaining / 2)
        loop = asyncio.get_running_loop()
        self._renewal = loop.call_later(delay, self._start_renewal)

    def _start_renewal(self) -> None:
        self._renewal = None
        if self.connected and (self._renewing is None or self._renewing.done()):
            self._renewing = asyncio.create_task(self._auto_renew())

    async def _auto_renew(self) -> None:
        try:
            await self.renew()
        except (RenewalError, ConnectFailed, ConnectionClosed, TimeoutError) as exc:
            if self.connected:  # lost meanwhile: the reconnect asks the provider anyway
                logger.warning("renewing the token failed: %s", exc)

    def _cancel_renewal(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        renewing, self._renewing = self._renewing, None
        if renewing is not None and renewing is not asyncio.current_task():
            renewing.cancel()

    def _require_running(self) -> None:
        if not self._running or self._stopping.is_set():
            raise ConnectionClosed("not connected: call connect() first")

    async def _send(self, packet: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or not self.connected:
            raise ConnectionClosed("not connected")
        try:
            await ws.send(json.dumps(packet, separators=(",", ":")))
        except WebSocketClosed as exc:
            code = exc.rcvd.code if exc.rcvd else _ABNORMAL
            raise ConnectionClosed("the connection closed", code) from exc

    async def _send_subscribe(self, channel: Channel) -> None:
        channel._requested = True
        data: dict[str, Any] = {"channel": channel.name}
        if channel.position is not None:
            data["since"] = position_data(channel.position)
        try:
            await self._send({"event": SUBSCRIBE_REQUEST, "data": data})
        except ConnectionClosed:
            channel._requested = False  # sent again after the reconnect

    def _settle(self, request_id: Any, data: Any, error: Any) -> bool:
        future = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if future is None or future.done():
            return False
        if error:
            future.set_exception(ReplyError(error))
        else:
            future.set_result(data)
        return True

    def _fail_pending(self, error: ConnectionClosed) -> None:
        pending = list(self._pending.values())
        self._pending.clear()
        for future in pending:
            if not future.done():
                future.set_exception(error)

    def _finish(self, reason: BaseException) -> None:
        self._ws = None
        self._fail_pending(ConnectionClosed(str(reason)))
        for channel in self._channels.values():
            waiter, channel._waiter = channel._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionClosed(str(reason)))
        for stream in list(self._streams):
            stream.close()
        self._streams.clear()
        if self.state is not ClientState.DISCONNECTED:
            self._set_state(ClientState.DISCONNECTED)

    def _set_state(self, state: ClientState, **details: Any) -> None:
        previous, self.state = self.state, state
        if previous is state and "attempt" not in details:
            return
        self._emit_local(STATE, {"state": state.value, "previous": previous.value, **details})

    def _emit_local(self, event: str, data: dict[str, Any]) -> None:
        packet = Packet(event=event, data=data)
        for stream in list(self._streams):
            if stream.matches(packet) and stream.event is not None:
                stream.put(packet)
        self._dispatch(packet)


def _jwt_expiry(token: str | None) -> float | None:
    """The ``exp`` claim of a JWT, unverified (only used to time a renewal); else ``None``."""
    parts = token.split(".") if token else []
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None
