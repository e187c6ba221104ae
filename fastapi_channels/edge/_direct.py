"""Writing pre-built websocket frames straight to uvicorn's transport.

A server-to-client text frame is the same bytes for every recipient (servers do not mask), so
a broadcast can frame its text once and hand those bytes to each socket. Through ASGI every
recipient's ``send`` instead encodes the text and frames it again, and goes through Starlette's
wrapper coroutines, which together cost more than the rest of a delivery in Python.

`DirectWrites.writer_for` finds, for one connection, the uvicorn protocol underneath the ASGI
callables, but only where skipping ASGI changes nothing an application can see:

- the server is uvicorn's ``websockets-sansio`` implementation (its default; the writer relies
  on its write flow control, there from 0.52.1 on, the oldest release the project allows);
- every callable wrapped around its ``send`` is one known to pass ``websocket.send`` messages
  through unchanged (Starlette's exception-handling wrapper); any other ASGI middleware that
  wraps ``send`` (to log, count or trace messages) keeps seeing every message;
- the only extension negotiated, if any, is ``permessage-deflate``: frames of up to 1 KiB are
  then written uncompressed (a message with RSV1 unset is an uncompressed one, RFC 7692 6.1;
  the compression contexts of both sides only ever see compressed messages, so they stay in
  step), larger ones go through ``send`` and are compressed as before. Node's ``ws`` library,
  which Socket.IO uses, does not compress under 1 KiB by default either: deflating a small
  JSON packet saves a few bytes and costs a compressor run per recipient.

Otherwise there is no direct writer and frames go through ASGI ``send``. The writer itself
refuses (returns ``False``) whenever the ASGI ``send`` would not complete at once: the peer is
behind (uvicorn paused writing), the close was sent, the socket is closing or gone. The caller
then uses ``send``, which waits or raises exactly as it always did, so ordering, backpressure
and failure handling are uvicorn's own.

The writers of one router share a `DirectWrites`, which finds them and holds the last frame
built, so that a broadcast is framed once for all its recipients.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "COMPRESS_THRESHOLD",
    "DirectWriter",
    "DirectWrites",
    "drop",
    "text_frame",
]

logger = logging.getLogger("fastapi_channels.router")

_SANSIO_MODULE = "uvicorn.protocols.websockets.websockets_sansio_impl"


def _code_named(function: Callable[..., Any], name: str) -> Any:
    for const in function.__code__.co_consts:
        if getattr(const, "co_name", None) == name:
            return const
    return None


class _Probe:
    scope: dict[str, Any] = {}


async def _app(scope: Any, receive: Any, send: Any) -> None:
    """A do-nothing ASGI app, only wrapped to find the code of Starlette's ``sender``."""


def _transparent_senders() -> frozenset[Any]:
    """The code of the ``sender`` closure Starlette's exception wrapper passes on as ``send``.

    It records ``http.response.start`` and forwards every message unchanged. Found once, from
    the installed Starlette (a private module, which FastAPI uses too); when it moves or its
    shape changes, nothing matches and every connection uses ASGI ``send``.
    """
    try:
        from starlette._exception_handler import wrap_app_handling_exceptions

        code = _code_named(wrap_app_handling_exceptions(_app, _Probe()), "sender")  # type: ignore[arg-type]
    except Exception:
        logger.warning("direct writes are off: Starlette's exception wrapper is not recognised")
        return frozenset()
    if code is None or "send" not in code.co_freevars:
        logger.warning("direct writes are off: Starlette's exception wrapper has changed")
        return frozenset()
    return frozenset((code,))


_TRANSPARENT_SENDERS = _transparent_senders()


def _unwrap(send: Any) -> Any:
    """The callable under Starlette's transparent wrappers (at most 8 deep), or ``send``."""
    for _ in range(8):
        code: Any = getattr(send, "__code__", None)
        if code not in _TRANSPARENT_SENDERS:
            return send
        send = send.__closure__[code.co_freevars.index("send")].cell_contents
    return send


def text_frame(text: str) -> bytes:
    """One unmasked, final websocket text frame holding ``text``."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


COMPRESS_THRESHOLD = 1024
"""With ``permessage-deflate``, texts longer than this go through ``send`` to be compressed."""


class DirectWriter:
    """Writes text frames for one connection straight to uvicorn's transport.

    Holds the uvicorn protocol, its transport and its "writable" event (objects the server
    keeps anyway), a size limit and the router's `DirectWrites`: one small object per
    connection. It is also the connection's `WriteProgress`: ``written`` counts the bytes it
    wrote, and `taken` how many of them left the transport's buffer.
    """

    __slots__ = ("_limit", "_owner", "_protocol", "_transport", "_writable", "written")

    def __init__(self, protocol: Any, limit: int, owner: DirectWrites) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._writable = protocol.writable
        self._limit = limit
        self._owner = owner
        self.written = 0

    def __call__(self, text: str) -> bool:
        """Write one text frame if ASGI ``send`` would complete at once; else return False.

        Never raises for a closed peer: it returns False and the caller's ``send`` reports it.
        """
        if (
            len(text) > self._limit
            or not self._writable.is_set()  # the peer is behind: uvicorn paused writing
            or self._transport.is_closing()  # closing, or gone: true from connection_lost on
            or self._protocol.close_sent
        ):
            return False
        # The owner's last frame, checked here rather than through a call: this runs once per
        # recipient, and a broadcast's recipients after the first all find their frame there.
        last = self._owner._last
        frame = last[1] if last[0] is text else self._owner.frame(text)
        self._transport.write(frame)
        self.written += len(frame)
        return True

    def taken(self) -> int:
        """Bytes of ``written`` the transport no longer buffers (see `WriteProgress`)."""
        buffered: int = self._transport.get_write_buffer_size()
        return self.written - buffered


class DirectWrites:
    """Direct writes for the connections of one router: their writers and their last frame.

    `writer_for` finds a connection's writer (see the module); the writers it returns share
    `frame`, which keeps the last text framed, so a broadcast (one ``str`` object handed to
    every recipient) is encoded and framed once for all of them, not once per recipient. A
    uvicorn whose protocol lacks what the writers read is reported once per router.
    """

    __slots__ = ("_last", "_warned")

    def __init__(self) -> None:
        # The last text framed and its frame, as one tuple: replaced in one store, so a reader
        # never sees a text paired with another text's frame.
        self._last: tuple[str, bytes] = ("", b"\x81\x00")
        self._warned = False  # whether this router reported a uvicorn it cannot write to

    def frame(self, text: str) -> bytes:
        """`text_frame` of ``text``, built once for as long as ``text`` is the latest text."""
        last = self._last
        if last[0] is text:
            return last[1]
        frame = text_frame(text)
        self._last = (text, frame)
        return frame

    def writer_for(self, protocol: Any) -> DirectWriter | None:
        """A direct writer for the connection served by ``protocol``, or None (see module).

        ``protocol`` is the uvicorn protocol whose own ``send`` is the connection's ASGI
        ``send``, under at most Starlette's transparent wrappers (`_uvicorn.protocol_behind`).
        Never raises: a uvicorn whose protocol no longer has what the writer reads gets None
        (and one warning in the log), so its connections send through ASGI as before.
        """
        if type(protocol).__module__ != _SANSIO_MODULE:  # not uvicorn's websockets-sansio
            return None
        try:
            extensions = protocol.conn.extensions
            if not extensions:
                limit = sys.maxsize
            elif len(extensions) == 1 and extensions[0].name == "permessage-deflate":
                limit = COMPRESS_THRESHOLD
            else:
                return None
            writer = DirectWriter(protocol, limit, self)
            # What the writer reads on every frame: present, or no direct writes at all.
            _ = protocol.close_sent, writer._writable.is_set
            _ = writer._transport.write, writer._transport.is_closing
            _ = writer._transport.get_write_buffer_size
        except AttributeError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("direct writes are off: this uvicorn's protocol differs (%s)", exc)
            return None
        return writer


_LINGER_NONE = struct.pack("ii", 1, 0)
"""``SO_LINGER`` on, for 0 seconds: closing resets the connection, unsent bytes discarded."""


def drop(transport: Any) -> None:
    """Drop the socket of uvicorn's ``transport`` at once, discarding what it has not sent.

    It sets ``SO_LINGER`` to zero, so the kernel resets the connection and frees its send
    queue instead of trying to deliver it to a peer that does not read, then aborts the
    transport; ``transport.close()`` (what uvicorn's own ping timeout calls) waits for the
    unsent bytes, forever when the peer never reads. A transport closing already is left
    alone. Never raises.
    """
    if transport.is_closing():
        return  # closed already (by the peer, or aborted before): nothing left to discard
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # OSError: the peer closed it meanwhile; ValueError: uvloop's socket has no file any
        # more (``negative file descriptor``). Either way there is no send queue to discard.
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NONE)
    transport.abort()
