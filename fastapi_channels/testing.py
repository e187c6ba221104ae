"""Test helpers: drive a fastapi_channels app in-process, with a timeout on every wait.

``SocketTestClient`` speaks to the ASGI app directly (no network, no threads), in the test's
own event loop; ``lifespan(app)`` runs the app's lifespan around a test:

```python
async with lifespan(app), SocketTestClient(app) as client:
    assert (await client.subscribe("global-chat"))["successful"]
    await client.emit("message", {"text": "hi"}, channel="global-chat")
    packet = await client.receive()
    answer = await client.request("message", {"text": "hi"}, channel="global-chat")
```
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, NoReturn

from pydantic_core import from_json, to_json
from starlette.types import ASGIApp, Message

from fastapi_channels.wire.errors import ConnectionClosed, ReplyError
from fastapi_channels.wire.protocol import (
    REPLY,
    SUBSCRIBE_REQUEST,
    SUBSCRIBE_RESPONSE,
    UNSUBSCRIBE_REQUEST,
    PacketId,
)

__all__ = ["ReceivedPacket", "SocketTestClient", "lifespan"]


class ReceivedPacket(dict[str, Any]):
    """A packet the server sent: a dict, with ``event``, ``channel`` and ``data`` attributes."""

    @property
    def event(self) -> str:
        """The event name."""
        return str(self["event"])

    @property
    def channel(self) -> str | None:
        """The channel, for a channel event."""
        return self.get("channel")

    @property
    def data(self) -> Any:
        """The payload."""
        return self.get("data")

    @property
    def id(self) -> PacketId | None:
        """The request id, for a ``channels:reply``."""
        return self.get("id")

    @property
    def error(self) -> dict[str, Any] | None:
        """The ``error`` object of a failed ``channels:reply``."""
        return self.get("error")


@contextlib.asynccontextmanager
async def lifespan(app: ASGIApp, timeout: float = 10.0) -> AsyncIterator[dict[str, Any]]:
    """Run ``app``'s ASGI lifespan (startup, then shutdown on exit); yields the lifespan state.

    Raises:
        RuntimeError: startup or shutdown failed; the app's message is included.
    """
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    state: dict[str, Any] = {}
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))

    async def step(kind: str) -> None:
        await inbox.put({"type": f"lifespan.{kind}"})
        async with asyncio.timeout(timeout):
            message = await outbox.get()
        if message["type"] != f"lifespan.{kind}.complete":
            task.cancel()
            raise RuntimeError(f"lifespan {kind} failed: {message.get('message', '')}")

    await step("startup")
    try:
        yield state
    finally:
        await step("shutdown")
        async with asyncio.timeout(timeout):
            await task


class SocketTestClient:
    """One in-process websocket connection to an ASGI app.

    Args:
        app: the FastAPI (or any ASGI) app; its lifespan must be running (see ``lifespan``).
        path: the endpoint path.
        subprotocols: offered in ``Sec-WebSocket-Protocol`` (the Envuso client's token).
        headers: extra handshake headers; a ``host`` or ``origin`` given here replaces the
            default (``testserver`` and ``http://testserver``).
        query_string: the raw query string, e.g. ``"token=..."``.
        timeout: the default timeout of every wait, in seconds.
    """

    def __init__(
        self,
        app: ASGIApp,
        path: str = "/ws",
        *,
        subprotocols: Sequence[str] = (),
        headers: Sequence[tuple[str, str]] = (),
        query_string: str = "",
        timeout: float = 2.0,
    ) -> None:
        self.app = app
        self.timeout = timeout
        self.subprotocol: str | None = None
        """The subprotocol the server selected, once connected."""
        self.ready: ReceivedPacket | None = None
        """The ``ready`` packet, once connected with ``async with``."""
        self.close_code: int | None = None
        self.close_reason: str = ""
        extra = [(k.lower().encode(), v.encode()) for k, v in headers]
        given = {name for name, _ in extra}
        defaults = [(b"host", b"testserver"), (b"origin", b"http://testserver")]
        raw_headers = [(name, value) for name, value in defaults if name not in given]
        if subprotocols:
            raw_headers.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
        raw_headers += extra
        self._scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query_string.encode(),
            "headers": raw_headers,
            "subprotocols": list(subprotocols),
            "state": {},
            "extensions": {},
        }
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._backlog: deque[ReceivedPacket] = deque()
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> SocketTestClient:
        """Connect and require ``ready`` (kept in `ready`)."""
        self.ready = await self.expect_ready()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self, timeout: float | None = None) -> ReceivedPacket:
        """Open the connection and return the server's first packet.

        That is ``ready``, or ``disconnect`` when refused; `expect_ready` requires ``ready``.

        Raises:
            ConnectionClosed: the server closed without accepting.
        """
        self._task = asyncio.ensure_future(self.app(self._scope, self._to_app.get, self._put))
        await self._to_app.put({"type": "websocket.connect"})
        message = await self._next_message(timeout)
        if message["type"] != "websocket.accept":
            self._closed_by(message)
        self.subprotocol = message.get("subprotocol")
        return await self.receive(timeout)

    async def expect_ready(self, timeout: float | None = None) -> ReceivedPacket:
        """Connect and assert that the first packet is ``ready``."""
        packet = await self.connect(timeout)
        assert packet.event == "ready", f"expected ready, got {packet!r}"
        return packet

    async def receive(self, timeout: float | None = None) -> ReceivedPacket:
        """Return the next packet the server sent; the packets of a batch come one by one.

        Raises:
            TimeoutError: nothing arrived in time.
            ConnectionClosed: the server closed the connection (``code``, ``reason`` set).
        """
        if self._backlog:
            return self._backlog.popleft()
        packet = from_json(await self.receive_text(timeout))
        if isinstance(packet, list):  # a batch (only after asking for ``channels:batch``)
            assert packet and all(isinstance(p, dict) for p in packet), f"bad batch {packet!r}"
            self._backlog.extend(ReceivedPacket(p) for p in packet[1:])
            packet = packet[0]
        assert isinstance(packet, dict), f"the server sent a non-object frame {packet!r}"
        return ReceivedPacket(packet)

    async def receive_text(self, timeout: float | None = None) -> str:
        """Return the text of the next frame as sent (a batch stays one JSON array).

        Raises:
            TimeoutError: nothing arrived in time.
            ConnectionClosed: the server closed the connection.
        """
        message = await self._next_message(timeout)
        if message["type"] == "websocket.send":
            text = message.get("text")
            assert text is not None, "the server sent a binary frame"
            return str(text)
        self._closed_by(message)

    async def receive_closed(self, timeout: float | None = None) -> tuple[int, str]:
        """Wait for the server to close; return ``(code, reason)``.

        Raises:
            AssertionError: a packet arrived first (it is kept for `receive`).
        """
        try:
            packet = await self.receive(timeout)
        except ConnectionClosed as exc:
            return exc.code or 1000, exc.reason
        self._backlog.appendleft(packet)
        raise AssertionError(f"expected the connection to close, got {packet!r}")

    async def assert_no_message(self, timeout: float = 0.1) -> None:
        """Assert that nothing arrives within ``timeout`` seconds."""
        try:
            packet = await self.receive(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"expected no message, got {packet!r}")

    async def emit(
        self,
        event: str,
        data: Any = ...,
        channel: str | None = None,
        *,
        id: PacketId | None = None,
        key: str | None = None,
    ) -> None:
        """Send an event; without ``data`` the packet has no ``data`` key (as Envuso's emit).

        With ``id`` the server answers with a ``channels:reply`` (see `receive_reply`); with
        ``key`` the handler's broadcasts are deduplicated by it (see the protocol's idempotency
        keys).
        """
        packet: dict[str, Any] = {"event": event}
        if channel is not None:
            packet["channel"] = channel
        if data is not ...:
            packet["data"] = data
        if id is not None:
            packet["id"] = id
        if key is not None:
            packet["key"] = key
        await self.send_text(to_json(packet).decode())

    async def request(
        self,
        event: str,
        data: Any = ...,
        channel: str | None = None,
        *,
        timeout: float | None = None,
        key: str | None = None,
    ) -> Any:
        """Send an event with a fresh ``id`` (and ``key``, if given) and return its reply's data.

        Packets that arrive before the reply are kept for `receive`.

        Raises:
            ReplyError: the reply carries an error (``code``, ``message``, ``errors``).
            TimeoutError: no reply within ``timeout`` (default: the client's timeout).
        """
        packet_id = next(self._ids)
        await self.emit(event, data, channel, id=packet_id, key=key)
        reply = await self.receive_reply(packet_id, timeout)
        error = reply.error
        if error is not None:
            raise ReplyError.from_reply(error)
        return reply.data

    async def receive_reply(self, id: PacketId, timeout: float | None = None) -> ReceivedPacket:
        """Wait for the ``channels:reply`` to ``id`` and return it whole.

        Packets that arrive before it are kept for `receive`.

        Raises:
            TimeoutError: it did not arrive within ``timeout`` seconds in all.
        """
        return await self._wait_for(lambda p: p.event == REPLY and p.id == id, timeout)

    async def subscribe(self, channel: str, timeout: float | None = None) -> dict[str, Any]:
        """Ask to subscribe and return the response's ``data``.

        Packets that arrive before the response are kept for `receive`.
        """
        await self.emit(SUBSCRIBE_REQUEST, {"channel": channel})
        response = await self._wait_for(
            lambda p: p.event == SUBSCRIBE_RESPONSE and p.data.get("channel") == channel, timeout
        )
        return dict(response.data)

    async def unsubscribe(self, channel: str) -> None:
        """Send Envuso's unsubscribe request (no response exists)."""
        await self.emit(UNSUBSCRIBE_REQUEST, {"channel": channel}, channel=channel)

    async def send_text(self, text: str) -> None:
        """Send a raw text frame."""
        await self._to_app.put({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        """Send a raw binary frame."""
        await self._to_app.put({"type": "websocket.receive", "bytes": data})

    async def close(self, code: int = 1000, timeout: float | None = None) -> None:
        """Close from the client side and wait for the app to finish with the connection."""
        task = self._task
        if task is None or task.done():
            return
        await self._to_app.put({"type": "websocket.disconnect", "code": code})
        async with asyncio.timeout(timeout or self.timeout):
            await task

    async def _wait_for(
        self, wanted: Callable[[ReceivedPacket], bool], timeout: float | None
    ) -> ReceivedPacket:
        """Return the first packet ``wanted`` accepts; keep the others for `receive`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.timeout)
        skipped: list[ReceivedPacket] = []
        backlog, self._backlog = self._backlog, deque()
        try:
            while backlog:
                packet = backlog.popleft()
                if wanted(packet):
                    return packet
                skipped.append(packet)
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError("the awaited packet did not arrive in time")
                packet = await self.receive(remaining)
                if wanted(packet):
                    return packet
                skipped.append(packet)
        finally:
            self._backlog.extendleft(reversed([*skipped, *backlog]))

    async def _put(self, message: Message) -> None:
        await self._from_app.put(message)

    async def _next_message(self, timeout: float | None) -> Message:
        getter = asyncio.ensure_future(self._from_app.get())
        task = self._task
        assert task is not None, "connect() first"
        done, _ = await asyncio.wait(
            {getter, task},
            timeout=timeout if timeout is not None else self.timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if getter in done:
            return getter.result()
        getter.cancel()
        if task in done:
            task.result()  # re-raise the app's exception
            if not self._from_app.empty():
                return self._from_app.get_nowait()
            raise ConnectionClosed("the app finished without closing", code=1006)
        raise TimeoutError("no message from the server in time")

    def _closed_by(self, message: Message) -> NoReturn:
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            self.close_reason = message.get("reason") or ""
            raise ConnectionClosed("closed by the server", self.close_code, self.close_reason)
        raise AssertionError(f"unexpected ASGI message {message!r}")
