"""The ASGI edge: the websocket endpoint, its refusals, and the lifespan that runs the server."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from inspect import Parameter, Signature
from secrets import token_hex
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import JSONResponse
from fastapi.routing import APIWebSocketRoute
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketState

from fastapi_channels.auth.tokens import select_subprotocol
from fastapi_channels.core.connection import BatchCache, SocketConnection
from fastapi_channels.core.stats import Stats
from fastapi_channels.edge import di
from fastapi_channels.edge._direct import DirectWrites, drop
from fastapi_channels.edge._promote import promote
from fastapi_channels.edge._ratelimit import RateLimit, Verdict
from fastapi_channels.edge._shutdown import Restart, intercept_shutdown
from fastapi_channels.edge._uvicorn import (
    HOOKS_KEY,
    Hooks,
    guard_pings,
    message_size_limit,
    protocol_behind,
    steps_in_place,
)
from fastapi_channels.edge.jsclient import CLIENT_SCRIPT, serve_client_script
from fastapi_channels.wire.errors import CloseCode, Reject
from fastapi_channels.wire.features import parse_features
from fastapi_channels.wire.limits import Limits
from fastapi_channels.wire.protocol import DISCONNECT, READY, encode
from fastapi_channels.wire.text import printable

if TYPE_CHECKING:
    from fastapi_channels.edge.channels import Channels

__all__ = ["build_router", "select_subprotocol"]

logger = logging.getLogger("fastapi_channels.router")


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


async def _refuse(
    websocket: WebSocket,
    stats: Stats,
    reason: str,
    code: int = CloseCode.NORMAL,
    kind: str | None = None,
) -> None:
    """Envuso's refusal: accept (echoing the subprotocol), ``disconnect``, close (1000).

    ``kind`` names the refusal in the statistics (``reason`` when it is one of ours; an
    application's own reasons are counted as ``rejected`` to keep the labels few).
    """
    _count_refusal(stats, kind or reason)
    await websocket.accept(subprotocol=select_subprotocol(websocket.scope.get("subprotocols", [])))
    await websocket.send_text(encode(DISCONNECT, {"reason": reason}).decode())
    await websocket.close(code, reason)


def _count_refusal(stats: Stats, kind: str) -> None:
    stats.connections_refused += 1
    stats.refusals[kind] += 1


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

    def __init__(
        self, app: ASGIApp, handshake_timeout: float, stats: Stats, serve: _Serve | None = None
    ) -> None:
        self.app = app
        self.handshake_timeout = handshake_timeout
        self.stats = stats
        self.serve = serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handshake = _Handshake(scope, receive, send, self.stats)
        scope[_HANDSHAKE_KEY] = handshake
        handshake.arm(self.handshake_timeout)
        try:
            await self.app(scope, handshake.receive, handshake.send)
            solved, handshake.solved = handshake.solved, None
            if solved is not None and self.serve is not None:  # see `_endpoint`
                for key in _FASTAPI_STACKS:  # closed with the session: not kept for nothing
                    scope.pop(key, None)
                await self.serve(*solved)
        except asyncio.CancelledError:
            if not handshake.expired or handshake.accepted or handshake.refused:
                raise
            task = asyncio.current_task()
            if task is not None and task.uncancel() > 0:
                raise  # cancelled from outside as well
            logger.warning("websocket refused: handshake took over %ss", self.handshake_timeout)
            await handshake.refuse("handshake timed out", "handshake timed out")
        except Exception as exc:
            if handshake.accepted or handshake.refused:
                raise
            if isinstance(exc, Reject | HTTPException):
                logger.info("websocket refused at the handshake: %r", exc)
            else:
                logger.exception("websocket refused: the handshake failed")
            await handshake.refuse(_public_reason(exc), type(exc).__name__)
        finally:
            handshake.disarm()
            scope.pop(_HANDSHAKE_KEY, None)  # refused before the endpoint took it


class _Handshake:
    """One connection's refusal guard: what it saw, and the server's own ``receive``/``send``.

    One small object per connection (rather than closures and their cells, which would live as
    long as the connection); the endpoint takes it out of the scope (`_HANDSHAKE_KEY`) and, once
    accepted, reads and writes through the server's callables directly.
    """

    __slots__ = (
        "accepted",
        "connected",
        "expired",
        "raw_receive",
        "raw_send",
        "refused",
        "scope",
        "solved",
        "stats",
        "timer",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send, stats: Stats) -> None:
        self.scope = scope
        self.raw_receive = receive
        self.raw_send = send
        self.stats = stats
        self.accepted = self.refused = self.connected = False
        self.expired = False
        self.timer: asyncio.TimerHandle | None = None
        # The endpoint's websocket and user, left for the guard to serve (see `_endpoint`).
        self.solved: tuple[WebSocket, Any] | None = None

    def arm(self, timeout: float) -> None:
        """Cancel the current task (the handshake) if it is not accepted within ``timeout``.

        A plain loop timer, dropped at ``accept``: an ``asyncio.timeout`` block would stay
        open, holding its state, for the connection's whole life.
        """
        self.timer = asyncio.get_running_loop().call_later(
            timeout, self._expire, asyncio.current_task()
        )

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self, task: asyncio.Task[Any] | None) -> None:
        self.timer = None
        if task is not None and not self.accepted and not self.refused:
            self.expired = True
            task.cancel()

    async def receive(self) -> Message:
        message = await self.raw_receive()
        self.connected = self.connected or message["type"] == "websocket.connect"
        return message

    async def refuse(self, reason: str, kind: str) -> None:
        self.refused = True
        _count_refusal(self.stats, kind)
        if not self.connected:
            await self.receive()
        send = self.raw_send
        subprotocol = select_subprotocol(self.scope.get("subprotocols", []))
        await send({"type": "websocket.accept", "subprotocol": subprotocol})
        frame = encode(DISCONNECT, {"reason": reason}).decode()
        await send({"type": "websocket.send", "text": frame})
        await send({"type": "websocket.close", "code": CloseCode.NORMAL, "reason": reason})

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.accepted:
            await self.raw_send(message)
        elif self.refused:
            return  # the rest of a replaced HTTP response
        elif kind == "websocket.accept":
            self.accepted = True
            self.disarm()
            await self.raw_send(message)
        elif kind == "websocket.close":
            logger.info("websocket refused at the handshake with close %s", message.get("code"))
            await self.refuse(message.get("reason") or "connection refused", "closed")
        elif kind == "websocket.http.response.start":
            logger.info("websocket refused at the handshake with HTTP %s", message["status"])
            await self.refuse(_status_reason(message["status"]), f"http-{message['status']}")
        else:
            await self.raw_send(message)


_HANDSHAKE_KEY = HOOKS_KEY
"""The scope key under which the guard hands its `_Handshake` to the endpoint.

FastAPI solves the user dependency between the two, so the handshake cannot be an argument.
In the scope it travels with the connection itself: a layer that copies the scope copies it
too (a table keyed by ``id(scope)`` would miss the copy), and nothing outside the connection
holds it. The endpoint replaces it with the connection's `_Hooks` under uvicorn (the same key,
`_uvicorn.HOOKS_KEY`: a replaced value costs nothing, where another key would make the table
grow) or takes it out, and the guard takes out what is left once the route returns. A context
variable would leave each connection's context a copy of its own.
"""


class _Shared:
    """What the connections of one router share: one frame, and one batch, per broadcast.

    Created by `build_router` and handed to each connection its endpoint creates: the direct
    writers' frame cache (`DirectWrites`), the batching connections' `BatchCache`, how a
    connection ends when uvicorn shuts down (`restart`), and whether the server's message size
    limit was checked (at the first connection).
    """

    __slots__ = ("batches", "direct", "restart", "size_checked")

    def __init__(self, restart: Restart) -> None:
        self.direct = DirectWrites()
        self.batches = BatchCache()
        self.restart = restart
        self.size_checked = False

    def check_size(self, send: Send, limit: int) -> None:
        """Warn once if the server assembles larger messages than ``limit`` before we see them.

        uvicorn holds a whole inbound message in memory (up to its ``--ws-max-size``, 16 MiB by
        default) before the reader can refuse it, so a client may make each connection hold
        that much. Only uvicorn tells its limit (found through ``send``); other servers, or a
        ``send`` wrapped by middleware, are not checked. Never raises.
        """
        if self.size_checked:
            return
        self.size_checked = True
        try:
            size = message_size_limit(send)
        except Exception:  # a server we cannot read: nothing to say
            return
        if size is not None and size > limit:
            logger.warning(
                "uvicorn accepts websocket messages of up to %d bytes, but "
                "Limits.max_message_size is %d: each connection may hold %d bytes before it "
                "is refused; run uvicorn with --ws-max-size %d",
                size,
                limit,
                size,
                limit,
            )


async def _serve(
    channels: Channels, shared: _Shared, websocket: WebSocket, user: Any = None
) -> None:
    server = channels.server
    dispatcher = channels.dispatcher
    if dispatcher is None:
        await _refuse(websocket, server.stats, "server not running", CloseCode.TRY_AGAIN_LATER)
        return
    if user is None and not channels.allow_anonymous:
        await _refuse(websocket, server.stats, "authentication required")
        return
    limits = channels.limits
    # After the handshake, frames go straight through the route's ASGI callables: Starlette's
    # state checks and wrapper coroutines cost time per frame and a suspended frame per idle
    # connection, and cannot fail once accepted (the server's own calls raise instead).
    handshake = websocket.scope.get(_HANDSHAKE_KEY)
    protocol: Any = None
    if isinstance(handshake, _Handshake):
        receive, send = handshake.raw_receive, handshake.raw_send
        protocol, own_send = protocol_behind(send)
        direct = shared.direct.writer_for(protocol) if own_send and limits.direct_writes else None
        in_place = own_send and steps_in_place(protocol)
        if not shared.size_checked:
            shared.check_size(send, limits.max_message_size)
    else:  # mounted without the guard: Starlette's own callables
        receive, send = websocket.receive, websocket.send
        direct = None
        own_send = in_place = False
    rate = _rate_limit(limits)
    hooks = _Hooks.of(protocol, own_send, rate, shared.restart) if protocol is not None else None
    connection = SocketConnection(
        _ASGITransport(websocket, send),
        id=token_hex(16),
        user=user,
        user_key=channels.user_key(user),
        scope=websocket.scope,
        max_queue=limits.queue_size,
        overflow=limits.overflow,
        stats=server.stats,
        close_timeout=limits.close_timeout,
        direct=direct,
        progress=direct,
        batches=shared.batches,
        abort=hooks,
        features=parse_features(websocket.scope.get("query_string", b"")),
        step_in_place=in_place,
    )
    try:
        await dispatcher.connect(connection)
    except Reject as exc:
        await _refuse(websocket, server.stats, exc.reason, kind="rejected")
        return
    if limits.max_connections is not None and len(server) >= limits.max_connections:
        logger.warning("refusing a connection: %d connections already", len(server))
        await _refuse(websocket, server.stats, "server busy", CloseCode.TRY_AGAIN_LATER)
        return
    per_user = limits.max_connections_per_user
    key = connection.user_key
    if per_user is not None and key is not None and server.count_of(key) >= per_user:
        logger.info("refusing user %s: too many connections", printable(key))
        await _refuse(websocket, server.stats, "too many connections", CloseCode.POLICY_VIOLATION)
        return
    await websocket.accept(subprotocol=select_subprotocol(websocket.scope.get("subprotocols", [])))
    connection.push(_ready_frame(connection.id))
    if hooks is not None:  # uvicorn calls them from now on: pings (see `_uvicorn`), shutdown
        hooks.connection = connection
        protocol.scope[HOOKS_KEY] = hooks  # in the handshake's place (`_HANDSHAKE_KEY`)
    else:
        websocket.scope.pop(_HANDSHAKE_KEY, None)
    # Reachable before the writer sends ``ready`` (queued first, so nothing precedes it): a
    # client that has seen ``ready`` gets what is sent to its user from any process.
    try:
        await server.add_connection(connection)
        connection.start()
        if hooks is not None:  # a restart ends it our way from now on (see `_shutdown`)
            hooks.serving = True
        dispatcher.opened(connection)
        # The reader, inline: every coroutine awaited here is a frame kept for the
        # connection's whole life. Size and rate checks, then one dispatch per frame, in order.
        # A frame over the rate limit (`_rate_limit`) is dropped and answered ``rate-limited``;
        # ``limits.rate_strikes`` drops in a row close the connection with 1008.
        max_size = limits.max_message_size
        stats = server.stats
        message: Message | None
        text: str | None
        while True:
            message = text = None  # nothing of the last frame stays referenced while idle
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if not connection.is_open:
                continue  # closing: drain until the peer answers the close
            text = message.get("text")
            size = len(text) if text is not None else len(message.get("bytes") or b"")
            stats.messages_in += 1
            stats.bytes_in += size
            if size > max_size or (
                text is not None and size * 4 > max_size and len(text.encode()) > max_size
            ):
                connection.close_soon(CloseCode.MESSAGE_TOO_BIG, "message too big")
                continue
            if rate is not None:
                verdict = rate.admit()
                if verdict is Verdict.EXCEEDED:
                    _close_for_rate(connection)
                    continue
                if verdict is Verdict.DROPPED:
                    dispatcher.reject_rate(connection, text)
                    continue
            if text is not None:
                await dispatcher.receive_text(connection, text)
            else:
                dispatcher.receive_bytes(connection)
    finally:
        if hooks is not None:
            protocol.scope.pop(HOOKS_KEY, None)
        await dispatcher.disconnect(connection)
        await connection.wait_closed(limits.close_timeout)


def _restart_for(channels: Channels) -> Restart:
    """How a connection ends when uvicorn shuts down: as `SocketServer.stop` would end it."""
    return functools.partial(
        channels.server.end_for_restart, spread=channels.limits.reconnect_spread
    )


def _rate_limit(limits: Limits) -> RateLimit | None:
    """A connection's rate limit (``limits.rate`` frames a second, up to ``limits.burst``)."""
    if limits.rate is None:
        return None
    return RateLimit(limits.rate, limits.burst, limits.rate_strikes)


def _close_for_rate(connection: SocketConnection) -> None:
    logger.warning("connection %s: rate limit exceeded, closing", connection.id)
    connection.close_soon(CloseCode.POLICY_VIOLATION, "rate limit exceeded")


def _ready_frame(connection_id: str) -> str:
    """The ``ready`` packet, ``{"event":"ready","data":{"id":...}}``: the id is hex only."""
    return f'{{"event":"{READY}","data":{{"id":"{connection_id}"}}}}'


class _Hooks(Hooks):
    """What uvicorn's protocol calls back into for one connection (`_uvicorn.Hooks`).

    Left in the protocol's scope (`HOOKS_KEY`) from the accept to the end of the connection:
    the class-level ping guard (`_uvicorn.guard_pings`) and shutdown (`_shutdown`) find it
    there, so neither allocates per connection. Called, it drops the socket at once (the
    connection's ``abort``, see `SocketConnection.drop_later`). One small object per
    connection under uvicorn; none under other servers.
    """

    __slots__ = ("connection", "rate", "restart_with", "serving", "transport")

    def __init__(self, transport: Any, rate: RateLimit | None, restart: Restart) -> None:
        self.transport = transport
        self.rate = rate
        self.restart_with = restart
        self.connection: SocketConnection | None = None
        self.serving = False  # until the connection has started: uvicorn's own shutdown

    @classmethod
    def of(
        cls, protocol: Any, own_send: bool, rate: RateLimit | None, restart: Restart
    ) -> _Hooks | None:
        """The hooks for a connection served by uvicorn's ``protocol``.

        None when the protocol has no transport to drop (then it has no hook to call either).
        """
        transport = getattr(protocol, "transport", None)
        if not callable(getattr(transport, "abort", None)):
            return None
        hooks = cls(transport, rate, restart)
        intercept_shutdown(protocol)
        if own_send:
            guard_pings(protocol)
        return hooks

    def __call__(self) -> None:
        drop(self.transport)

    def admit_ping(self) -> bool:
        """Whether to answer one protocol-level ping: it takes a token like any frame."""
        connection = self.connection
        if connection is None or not connection.is_open:
            return False
        rate = self.rate
        if rate is None:
            return True
        verdict = rate.admit()
        if verdict is Verdict.EXCEEDED:
            _close_for_rate(connection)
        return verdict is Verdict.ALLOWED

    def restart(self) -> bool:
        """End the connection for a restart (`Restart`); False until it has started."""
        connection = self.connection
        return self.serving and connection is not None and bool(self.restart_with(connection))


_Serve = Callable[[WebSocket, Any], Coroutine[Any, Any, None]]
"""``_serve`` bound to a router's objects: serves one connection, its user solved."""


def _endpoint(channels: Channels, shared: _Shared, dependency: Any) -> Callable[..., Any]:
    """The FastAPI endpoint: it takes the user FastAPI solved, and serves the connection.

    Where it can, it only hands the websocket and the user to the refusal guard (in the
    `_Handshake`) and returns: FastAPI's websocket session then ends at once, and the guard
    serves the connection, so the session's exit stacks, exception wrappers, solved values and
    suspended frames (about 5 KiB) are not kept for the connection's whole life. It cannot
    when a dependency holds something until the session ends (a ``yield`` dependency left a
    callback in one of FastAPI's exit stacks; it must live as long as the connection), nor
    without the guard: then it serves the connection inside the session.

    A ``partial`` with a signature rather than a wrapper function: a wrapper's frame would be
    kept, suspended, for each connection's whole life.
    """
    parameters = [
        Parameter("websocket", Parameter.POSITIONAL_OR_KEYWORD, annotation=WebSocket),
        Parameter(
            "user", Parameter.POSITIONAL_OR_KEYWORD, default=Depends(dependency), annotation=Any
        ),
    ]
    endpoint = functools.partial(_hand_over, functools.partial(_serve, channels, shared))
    endpoint.__signature__ = Signature(parameters)  # type: ignore[attr-defined]
    return endpoint


async def _hand_over(serve: _Serve, websocket: WebSocket, user: Any) -> None:
    """Leave the connection to the refusal guard when nothing of the session must stay open."""
    scope = websocket.scope
    handshake = scope.get(_HANDSHAKE_KEY)
    if isinstance(handshake, _Handshake) and not any(
        _holds(scope.get(key)) for key in _FASTAPI_STACKS
    ):
        handshake.solved = (websocket, user)
        return
    await serve(websocket, user)


_FASTAPI_STACKS = ("fastapi_inner_astack", "fastapi_function_astack")
"""The scope keys of the exit stacks FastAPI's websocket session closes when it ends."""


def _holds(stack: Any) -> bool:
    """Whether an exit stack has something to close (a ``yield`` dependency); unknown: yes."""
    if stack is None:
        return False
    callbacks = getattr(stack, "_exit_callbacks", None)
    return callbacks is None or len(callbacks) > 0


class _Anonymous:
    """The endpoint of a `Channels` without a user dependency, as a plain ASGI app.

    With no dependency there is nothing for FastAPI to solve, so the connection is served
    without FastAPI's websocket session around it: its exit stacks, its exception wrapper and
    its dependency solving would cost time at every connect and their suspended frames memory
    for the connection's whole life. Its call returns ``_serve``'s coroutine: no frame of its
    own.
    """

    __slots__ = ("channels", "shared")

    def __init__(self, channels: Channels, shared: _Shared) -> None:
        self.channels = channels
        self.shared = shared

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        # The coroutine of ``_serve`` itself, not one awaiting it: no frame of its own.
        return _serve(self.channels, self.shared, WebSocket(scope, receive, send))


ASYNCAPI_SUFFIX = "/asyncapi.json"
"""Where the AsyncAPI document is served, after the websocket path: ``/ws/asyncapi.json``."""


def _asyncapi_endpoint(channels: Channels) -> Callable[[Request], Any]:
    async def asyncapi(request: Request) -> JSONResponse:
        app = request.app
        document = channels.served_asyncapi(
            title=getattr(app, "title", None) or "fastapi_channels",
            version=getattr(app, "version", None) or "0.1.0",
            description=getattr(app, "description", None) or None,
        )
        return JSONResponse(document)

    return asyncapi


class _AppOverrides:
    """Lets the endpoint see ``app.dependency_overrides`` of the app it is included in."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    @property
    def dependency_overrides(self) -> dict[Any, Any]:
        return self.app.dependency_overrides if self.app is not None else {}


def build_router(channels: Channels) -> APIRouter:
    """Build the router: the websocket endpoint, the server's lifespan and the AsyncAPI route.

    The AsyncAPI document is served at ``{path}/asyncapi.json`` unless ``asyncapi=False``.

    The endpoint is a FastAPI websocket route (so the user dependency is solved by FastAPI,
    ``app.dependency_overrides`` included; without a user dependency, a plain ASGI app, see
    `_Anonymous`) wrapped in the refusal guard, and registered as a plain ASGI route so the
    guard survives ``include_router``; while the app runs, the app's own route table serves
    it (see `_promote`). The JavaScript client is served
    at ``<path>/client.js``. The connections the endpoint serves share one `_Shared`, so that a
    broadcast is framed, and batched, once for all of them.
    """
    overrides = _AppOverrides()
    served: list[WebSocketRoute] = []  # the websocket route, once built below

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        overrides.app = app
        demote = promote(app, router, served[0]) if served else None
        try:
            async with channels:
                di.attach(app, channels.container)
                yield
        finally:
            if demote is not None:
                demote()

    router = APIRouter(lifespan=lifespan)
    if channels.api_guard is not None:
        from fastapi_channels.edge.api import build_api

        router.include_router(
            build_api(channels, [Depends(channels.api_guard)]),
            prefix=channels.path.rstrip("/") + "/api",
        )
    if channels.info_guard is not None:

        @router.get(
            f"{channels.path}/info",
            dependencies=[Depends(channels.info_guard)],
            name="fastapi_channels_info",
            tags=["fastapi_channels"],
        )
        async def info() -> dict[str, Any]:
            """This process's connections, channels, queues, broker state and counters."""
            return channels.server.snapshot()

    if channels.enabled:
        shared = _Shared(_restart_for(channels))
        endpoint: ASGIApp
        dependency = channels.user_dependency
        if dependency is None:  # nothing for FastAPI to solve
            endpoint = _Anonymous(channels, shared)
        else:
            endpoint = APIWebSocketRoute(
                channels.path,
                _endpoint(channels, shared, dependency),
                name="fastapi_channels",
                dependency_overrides_provider=overrides,
            ).app
        served.append(
            WebSocketRoute(
                channels.path,
                _RefuseOnError(
                    endpoint,
                    channels.limits.handshake_timeout,
                    channels.server.stats,
                    functools.partial(_serve, channels, shared),
                ),
                name="fastapi_channels",
            )
        )
        router.routes.append(served[0])
        router.add_route(
            f"{channels.path.rstrip('/')}/{CLIENT_SCRIPT}",
            serve_client_script,
            methods=["GET", "HEAD"],
            name="fastapi_channels_client",
            include_in_schema=False,
        )
        if channels.serve_asyncapi:
            router.add_api_route(
                channels.path.rstrip("/") + ASYNCAPI_SUFFIX,
                _asyncapi_endpoint(channels),
                methods=["GET"],
                include_in_schema=False,
                name="fastapi_channels_asyncapi",
            )
    return router
