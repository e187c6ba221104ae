"""What the edge reads of the uvicorn protocol behind an ASGI ``send``, when there is one.

Under uvicorn the ASGI ``send`` a route receives is a bound method of the connection's
protocol object, possibly under Starlette's transparent exception wrappers (`_direct._unwrap`
sees through them). Anything else in between (an ASGI middleware that wraps ``send``), or
another server, leaves no protocol to find, and every function here then answers as for an
unknown server. None of them raises: a uvicorn whose protocol differs is treated as unknown.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from starlette.types import Send

from fastapi_channels.edge._direct import _unwrap

__all__ = [
    "HOOKS_KEY",
    "Hooks",
    "guard_pings",
    "hooks_of",
    "message_size_limit",
    "protocol_behind",
    "steps_in_place",
    "uvicorn_protocol",
]

logger = logging.getLogger("fastapi_channels.router")

_PACKAGE = "uvicorn.protocols.websockets."
_STEPPABLE = frozenset(
    (
        "uvicorn.protocols.websockets.websockets_sansio_impl",
        "uvicorn.protocols.websockets.wsproto_impl",
    )
)
"""The implementations whose ``send`` only awaits the protocol's "writable" event."""


def protocol_behind(send: Send) -> tuple[Any, bool]:
    """The uvicorn websocket protocol behind ``send`` (or None), and whether ``send`` is its own.

    uvicorn's legacy ``websockets`` implementation passes ``asgi_send``, not its ``send``. One
    walk through Starlette's wrappers, for everything a connection asks.
    """
    inner = _unwrap(send)
    protocol = getattr(inner, "__self__", None)
    if protocol is None or not type(protocol).__module__.startswith(_PACKAGE):
        return None, False
    return protocol, getattr(inner, "__func__", None) is getattr(type(protocol), "send", 0)


def uvicorn_protocol(send: Send) -> Any:
    """The uvicorn websocket protocol object whose method ``send`` is, or None."""
    protocol, own = protocol_behind(send)
    return protocol if own else None


def steps_in_place(protocol: Any) -> bool:
    """Whether a send coroutine of ``protocol.send`` may be stepped outside a task.

    True only for uvicorn's ``websockets-sansio`` and ``wsproto`` implementations, whose
    ``send`` awaits nothing but an asyncio event, with at most Starlette's exception wrappers
    around it. Any other ``send`` (another server's; one wrapped by a middleware that may open
    ``asyncio.timeout`` or an anyio cancel scope, which need the task they run in) is awaited
    in the connection's writer task. ``protocol`` is `uvicorn_protocol` of the ASGI ``send``
    (None when there is none).
    """
    return type(protocol).__module__ in _STEPPABLE


def message_size_limit(send: Send) -> int | None:
    """The largest websocket message the uvicorn behind ``send`` assembles, or None if unknown.

    uvicorn reads its ``--ws-max-size`` (``Config.ws_max_size``, 16 MiB by default) from the
    configuration its protocol keeps. None for other servers, for a ``send`` wrapped by
    middleware, and for a uvicorn whose protocol no longer holds it.
    """
    protocol = uvicorn_protocol(send)
    size = getattr(getattr(protocol, "config", None), "ws_max_size", None)
    return size if isinstance(size, int) and not isinstance(size, bool) else None


_SANSIO = "uvicorn.protocols.websockets.websockets_sansio_impl"
_PONG = b"\x8a"
"""The first byte of a server's pong frame: final, opcode 0xA (server frames are unmasked)."""

HOOKS_KEY = "fastapi_channels.connection"
"""The key, in the connection's scope, of its `Hooks` (uvicorn's protocol keeps that scope).

The edge's refusal guard keeps its handshake under the same key until the connection is
accepted, and the hooks then take its place: a value replaced, where a key added after the
handshake's was taken out would make the scope's table grow (768 bytes). A protocol whose
scope holds no hooks (another route's socket) behaves as uvicorn wrote it.
"""

_PING_HOOK = "_fastapi_channels_ping_hook"
"""Marks a protocol class (in its own ``__dict__``) whose ``handle_ping`` was replaced, or not."""


class Hooks(ABC):
    """What a connection answers when uvicorn's protocol calls back into it."""

    __slots__ = ()

    @abstractmethod
    def admit_ping(self) -> bool:
        """Whether to answer one protocol-level ping (it takes a rate-limit token)."""

    @abstractmethod
    def restart(self) -> bool:
        """End the connection for a restart; False when it did nothing (already closing)."""


def hooks_of(protocol: Any) -> Hooks | None:
    """The `Hooks` a connection left in ``protocol``'s scope, or None. Never raises."""
    scope = getattr(protocol, "scope", None)
    hooks = scope.get(HOOKS_KEY) if isinstance(scope, dict) else None
    return hooks if isinstance(hooks, Hooks) else None


def guard_pings(protocol: Any) -> bool:
    """Count the client's protocol-level pings and answer only those the peer can take.

    uvicorn's ``websockets-sansio`` answers every ping frame with a pong written to the
    transport at once, whether or not the peer reads: a client that sends pings and never
    reads makes the server's write buffer grow as fast as it sends, and its pings take no
    share of any rate limit. Guarded, each pong first calls the connection's
    `Hooks.admit_ping` (its rate limit, one token per ping), and is written only if it says
    yes and the peer keeps up (uvicorn has not paused writing); otherwise the pong is dropped.
    RFC 6455 (5.5.3) lets an endpoint skip pongs to earlier pings; a client that pings again
    once it reads gets its answer. So what unread pongs hold is bounded by the transport's
    high-water mark (64 KiB by default) and one chunk read's pongs at most.

    The guard is installed once per process on the protocol's class (its ``handle_ping``),
    not per connection: it finds the connection through `HOOKS_KEY` in the protocol's scope,
    and protocols without one (sockets of other routes) answer pings as uvicorn does. So a
    guarded connection allocates nothing for it. Returns whether ``protocol``'s pings are
    guarded: False for other uvicorn implementations and other servers, or a uvicorn whose
    protocol differs (then nothing is changed). Never raises.
    """
    cls = type(protocol)
    installed = cls.__dict__.get(_PING_HOOK)
    if installed is None:
        installed = _install_ping_guard(cls, protocol)
    return installed is True


def _install_ping_guard(cls: type, protocol: Any) -> bool:
    installed = False
    if cls.__module__ == _SANSIO and callable(getattr(cls, "handle_ping", None)):
        try:
            _ = protocol.conn.data_to_send, protocol.transport.write
            _ = protocol.transport.is_closing, protocol.writable.is_set
        except AttributeError:
            pass
        else:
            cls.handle_ping = _guarded(cls.handle_ping)  # type: ignore[attr-defined]
            installed = True
    setattr(cls, _PING_HOOK, installed)
    return installed


def _guarded(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def handle_ping(self: Any) -> None:
        hooks = hooks_of(self)
        if hooks is None:
            original(self)
            return
        writable, transport = self.writable, self.transport
        # What the protocol made while parsing the last chunk read, one frame per item, in
        # order: the pongs of every ping in that chunk (this call is the first of theirs; the
        # others find nothing left), and any other frame (a close answered) as it came.
        for data in self.conn.data_to_send():
            if data[:1] == _PONG and not (
                hooks.admit_ping() and writable.is_set() and not transport.is_closing()
            ):
                continue  # writing it may pause writing: the next pong then sees that
            transport.write(data)

    handle_ping.__qualname__ = f"{original.__qualname__} (guarded by fastapi_channels)"
    return handle_ping
