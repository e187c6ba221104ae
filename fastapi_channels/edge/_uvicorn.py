"""What the edge reads of the uvicorn protocol behind an ASGI ``send``, when there is one.

Under uvicorn the ASGI ``send`` a route receives is a bound method of the connection's
protocol object, possibly under Starlette's transparent exception wrappers (`_direct._unwrap`
sees through them). Anything else in between (an ASGI middleware that wraps ``send``), or
another server, leaves no protocol to find, and every function here then answers as for an
unknown server. None of them raises: a uvicorn whose protocol differs is treated as unknown.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from starlette.types import Send

from fastapi_channels.edge._direct import _unwrap

__all__ = ["guard_pings", "message_size_limit", "steps_in_place", "uvicorn_protocol"]

logger = logging.getLogger("fastapi_channels.router")

_PACKAGE = "uvicorn.protocols.websockets."
_STEPPABLE = frozenset(
    (
        "uvicorn.protocols.websockets.websockets_sansio_impl",
        "uvicorn.protocols.websockets.wsproto_impl",
    )
)
"""The implementations whose ``send`` only awaits the protocol's "writable" event."""


def uvicorn_protocol(send: Send) -> Any:
    """The uvicorn websocket protocol object whose method ``send`` is, or None."""
    inner = _unwrap(send)
    protocol = getattr(inner, "__self__", None)
    if protocol is None or not type(protocol).__module__.startswith(_PACKAGE):
        return None
    if getattr(inner, "__func__", None) is not getattr(type(protocol), "send", 0):
        return None
    return protocol


def steps_in_place(send: Send) -> bool:
    """Whether a send coroutine of ``send`` may be stepped outside a task (``coro.send(None)``).

    True only for uvicorn's ``websockets-sansio`` and ``wsproto`` implementations, whose
    ``send`` awaits nothing but an asyncio event, with at most Starlette's exception wrappers
    around it. Any other ``send`` (another server's; one wrapped by a middleware that may open
    ``asyncio.timeout`` or an anyio cancel scope, which need the task they run in) is awaited
    in the connection's writer task.
    """
    protocol = uvicorn_protocol(send)
    return protocol is not None and type(protocol).__module__ in _STEPPABLE


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


def guard_pings(send: Send, admit: Callable[[], bool]) -> Callable[[], None] | None:
    """Count the client's protocol-level pings and answer only those the peer can take.

    uvicorn's ``websockets-sansio`` answers every ping frame with a pong written to the
    transport at once, whether or not the peer reads: a client that sends pings and never
    reads makes the server's write buffer grow as fast as it sends, and its pings take no
    share of any rate limit. Guarded, each pong first calls ``admit`` (the connection's rate
    limit, one token per ping), and is written only if ``admit`` says yes and the peer keeps
    up (uvicorn has not paused writing); otherwise the pong is dropped. RFC 6455 (5.5.3) lets
    an endpoint skip pongs to earlier pings; a client that pings again once it reads gets its
    answer. So what unread pongs hold is bounded by the transport's high-water mark (64 KiB
    by default) and one chunk read's pongs at most.

    Returns the function that removes the guard (call it when the connection ends: the guard
    refers to the connection), or None where there is nothing to guard: other uvicorn
    implementations and other servers, or a uvicorn whose protocol differs.
    """
    protocol = uvicorn_protocol(send)
    if protocol is None or type(protocol).__module__ != _SANSIO:
        return None
    try:
        data_to_send = protocol.conn.data_to_send
        transport, writable = protocol.transport, protocol.writable
        if not callable(getattr(type(protocol), "handle_ping", None)):
            return None
        _ = transport.write, transport.is_closing, writable.is_set
    except AttributeError:
        return None

    def handle_ping() -> None:
        # What the protocol made while parsing the last chunk read, one frame per item, in
        # order: the pongs of every ping in that chunk (this call is the first of theirs; the
        # others find nothing left), and any other frame (a close answered) as it came.
        for data in data_to_send():
            if data[:1] == _PONG and not (
                admit() and writable.is_set() and not transport.is_closing()
            ):
                continue  # writing it may pause writing: the next pong then sees that
            transport.write(data)

    protocol.handle_ping = handle_ping
    return functools.partial(_unguard, protocol)


def _unguard(protocol: Any) -> None:
    protocol.__dict__.pop("handle_ping", None)
