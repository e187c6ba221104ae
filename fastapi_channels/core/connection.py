"""One client connection: its subscriptions, its bounded outgoing queue and its writer.

Sending never waits on the socket. A frame for an idle connection is written at once: the
transport's send coroutine is started in place and, when it completes without suspending (the
socket's buffer has room, the usual case), no task, future or queue entry is created for it.
Only when a send suspends (the peer reads slowly, the transport paused writing) does the
connection get a writer task, which finishes that send and drains what queued up meanwhile, in
order, then goes away again. Frames that arrive while a send is pending wait in a bounded queue;
when it is full, the connection's `OverflowPolicy` decides.

Clients that opt in to batching (see `SocketConnection.enable_batching`) get the frames
that wait for them in one loop turn as one frame holding a JSON array of packets.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import operator
from collections import deque
from collections.abc import Callable, Coroutine, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from fastapi_channels.core._stepping import resume
from fastapi_channels.core.stats import Stats
from fastapi_channels.wire.errors import CloseCode, ConnectionClosed
from fastapi_channels.wire.limits import OverflowPolicy
from fastapi_channels.wire.protocol import DISCONNECT, encode

if TYPE_CHECKING:
    from fastapi_channels.core.channel import Subscription

__all__ = ["BatchCache", "Mark", "SocketConnection", "Transport", "WriteProgress"]

logger = logging.getLogger("fastapi_channels.connection")


class Transport(Protocol):
    """What a connection needs from the socket underneath."""

    def send_text(self, text: str) -> Coroutine[Any, Any, None]:
        """A coroutine that sends one text frame; it may suspend while the peer does not read.

        Unless the connection was made with ``step_in_place=False``, it may step the coroutine
        itself (``coro.send(None)``) rather than await it in a task: it must then be a real
        coroutine (any ``async def`` is) that only awaits asyncio futures, and uses nothing
        that needs the current task (``asyncio.timeout``, an anyio cancel scope).
        """

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame."""


class WriteProgress(Protocol):
    """How far the socket underneath has taken the bytes written to it (a direct writer's).

    ``written`` counts the bytes written to the transport so far; `taken` those of them the
    transport has handed to the operating system (written minus what it still buffers).
    """

    written: int

    def taken(self) -> int:
        """Bytes of ``written`` no longer buffered in the server."""


Mark: TypeAlias = "tuple[int, int]"
"""Where a connection's output stood at one moment: frames handed, bytes written (`mark`)."""


_BATCH_MAX = 100
"""The most packets one batched frame holds."""


class BatchCache:
    """What the batching connections of one router share: the last batch and the flush.

    A burst of broadcasts leaves the same frames (the same objects) waiting for every batching
    subscriber, so their batches are equal: built once, and, being one object, framed once by
    a direct writer. The batching connections with frames waiting are flushed together by one
    callback at the end of the loop turn, not one callback each. The endpoint gives every
    connection of one router the same cache; a connection given none has its own, and builds
    and flushes its batches by itself.
    """

    __slots__ = ("_due", "_last")

    def __init__(self) -> None:
        # The frames of the last batch and its text, as one tuple: replaced in one store.
        self._last: tuple[list[str], str] = ([], "[]")
        self._due: list[SocketConnection] = []  # waiting for the end of this loop turn

    def text(self, queue: deque[str]) -> str:
        """The batch of the frames in ``queue`` (at most `_BATCH_MAX`), as one JSON array."""
        frames, text = self._last
        if len(queue) != len(frames) or not all(map(operator.is_, queue, frames)):
            frames = list(queue)
            text = f"[{','.join(frames)}]"
            self._last = (frames, text)
        return text

    def flush_soon(self, connection: SocketConnection) -> None:
        """Send what waits for ``connection`` at the end of this loop turn.

        The caller asks once per turn, whatever the number of frames pushed meanwhile.
        """
        due = self._due
        due.append(connection)
        if len(due) == 1:
            asyncio.get_running_loop().call_soon(self._flush_due)

    def _flush_due(self) -> None:
        due, self._due = self._due, []
        for connection in due:
            try:
                connection._flush()
            except Exception:  # one connection's failure must not hold the others' frames
                logger.exception("connection %s: sending a batch failed", connection.id)


class SocketConnection:
    """A connected client.

    Attributes:
        id: a unique id (hex), also sent to the client in ``ready``.
        user: what the ``Channels`` user dependency returned; ``None`` when anonymous.
        user_key: the key used to reach this connection by user id; ``None`` when anonymous.
        scope: the ASGI scope of the handshake (headers, client address, path).
        subscriptions: the connection's subscriptions by concrete channel name.
        features: the extensions the client announced at connect (see
            `fastapi_channels.wire.features`); empty for Envuso's client.

    Sending: with ``step_in_place`` (the default, for transports whose send only awaits asyncio
    futures, such as uvicorn's own) a send runs in place and only one
    that suspends moves to a writer task. Without it every send is awaited in a writer task,
    created when frames start waiting and gone once they are sent: the edge passes False for
    an ASGI ``send`` it does not recognise (another server's, or one wrapped by middleware).

    Memory: an idle connection holds its slots and one small object per subscription; the
    queue and the writer task exist only while frames wait for a slow peer. Queued frames are
    shared ``str`` objects: a broadcast's frame is one object for all recipients.
    """

    __slots__ = (
        "__weakref__",
        "_abort",
        "_batch",
        "_batches",
        "_close_timeout",
        "_closed",
        "_closing",
        "_deadline",
        "_direct",
        "_flush_scheduled",
        "_handed",
        "_inline",
        "_max_queue",
        "_on_abandon",
        "_policy",
        "_progress",
        "_queue",
        "_started",
        "_stats",
        "_transport",
        "_writer",
        "features",
        "id",
        "scope",
        "subscriptions",
        "user",
        "user_key",
    )

    def __init__(
        self,
        transport: Transport,
        *,
        id: str,
        user: Any = None,
        user_key: str | None = None,
        scope: MutableMapping[str, Any] | None = None,
        max_queue: int = 1000,
        overflow: OverflowPolicy = OverflowPolicy.DISCONNECT,
        stats: Stats | None = None,
        close_timeout: float = 5.0,
        direct: Callable[[str], bool] | None = None,
        batches: BatchCache | None = None,
        abort: Callable[[], None] | None = None,
        features: frozenset[str] = frozenset(),
        step_in_place: bool = True,
        progress: WriteProgress | None = None,
    ) -> None:
        self.id = id
        self.features = features
        self.user = user
        self.user_key = user_key
        self.scope: MutableMapping[str, Any] = scope if scope is not None else {}
        self.subscriptions: dict[str, Subscription] = {}
        self._transport = transport
        self._direct = direct
        self._progress = progress
        self._handed = 0  # frames taken by `push`, ever: `mark` and `passed` compare them
        self._abort = abort
        self._inline = step_in_place
        self._queue: deque[str] | None = None  # created when a frame first has to wait
        self._max_queue = max_queue
        self._policy = overflow
        self._closing: tuple[int, str] | None = None
        self._close_timeout = close_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._on_abandon: Callable[[SocketConnection], None] | None = None
        self._closed = False
        self._started = False
        self._batch = False
        self._flush_scheduled = False
        self._batches = batches if batches is not None else BatchCache()
        self._writer: asyncio.Task[None] | None = None  # only while a send is pending
        self._stats = stats if stats is not None else Stats()

    def __repr__(self) -> str:
        return f"<SocketConnection {self.id} user={self.user_key!r}>"

    @property
    def is_open(self) -> bool:
        """Whether frames can still be queued (not closing nor closed)."""
        return self._closing is None and not self._closed

    @property
    def queued(self) -> int:
        """How many frames wait in the outgoing queue."""
        return len(self._queue) if self._queue else 0

    @property
    def writes_directly(self) -> bool:
        """Whether frames go straight to the server's socket when it can take them.

        True under uvicorn's default websocket implementation when no ASGI middleware wraps
        ``send`` (see ``Limits.direct_writes``); frames are then framed once per broadcast.
        False means every frame goes through ASGI ``send``.
        """
        return self._direct is not None

    @property
    def batching(self) -> bool:
        """Whether waiting frames are sent to this client batched (see `enable_batching`)."""
        return self._batch

    def has_subscription(self, channel: str) -> bool:
        """Whether the connection is subscribed to the concrete ``channel``."""
        return channel in self.subscriptions

    def start(self) -> None:
        """Start sending; frames pushed before are sent first, in order."""
        if self._started:
            return
        self._started = True
        if self._closing is not None:
            self._writer = asyncio.get_running_loop().create_task(self._write(None, None))
        else:
            self._flush()

    def enable_batching(self) -> None:
        """Send frames that wait together as one frame: a JSON array of up to 100 packets.

        Only for clients that asked for it (the ``channels:batch`` option): the Envuso client
        parses every frame as one packet object. Frames pushed during one event-loop turn are
        sent at the end of it, so a burst of broadcasts costs one socket write, not one each.
        """
        self._batch = True

    def push(self, frame: str) -> bool:
        """Hand one encoded frame to the connection without waiting; returns whether it was taken.

        This is the fan-out path: it never blocks and never raises. An idle connection writes
        the frame at once (the transport's send runs in place; see the module docstring); a
        connection whose peer is behind queues it. A closing or closed connection ignores the
        frame; a full queue applies the overflow policy. A send that fails marks the connection
        closed (the peer is gone; its reader cleans up).
        """
        if self._closing is not None or self._closed:
            return False
        stats = self._stats
        if self._writer is None and self._started and not self._batch and self._inline:
            self._handed += 1
            stats.messages_out += 1
            stats.bytes_out += len(frame)
            direct = self._direct  # idle, so nothing is queued: order is kept
            if direct is None or not direct(frame):
                self._send_through(frame)
            return True
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if len(queue) >= self._max_queue:
            stats.dropped += 1
            if self._policy is OverflowPolicy.DROP_NEWEST:
                return False
            if self._policy is OverflowPolicy.DISCONNECT:
                logger.warning("connection %s: outgoing queue full, disconnecting", self.id)
                stats.dropped += len(queue)
                queue.clear()
                self.close_soon(CloseCode.TRY_AGAIN_LATER, "too slow")
                return False
            queue.popleft()
        queue.append(frame)
        self._handed += 1
        stats.messages_out += 1
        stats.bytes_out += len(frame)
        if self._writer is None and self._started:
            if not self._inline and not self._batch:
                self._start_writer()
            elif not self._flush_scheduled and self._batch:
                self._flush_scheduled = True
                self._batches.flush_soon(self)
        return True

    def mark(self) -> Mark:
        """Where the connection's output stands now: compare a later state with `passed`."""
        progress = self._progress
        return (self._handed, 0 if progress is None else progress.written)

    def passed(self, mark: Mark) -> bool:
        """Whether everything pushed before ``mark`` was taken has left the server.

        Left means handed to the operating system's socket: no longer in the outgoing queue,
        in a pending send, nor (with a direct writer) in the transport's write buffer. A
        closing or closed connection holds nothing for its peer any more: True. Frames sent
        through ``send`` while a direct writer exists also sit in the transport's buffer
        without being counted in its ``written``: they make this answer False until that
        buffer has emptied. For a batching client a batch being sent counts as one frame.
        """
        if self._closing is not None or self._closed:
            return True
        handed, written = mark
        waiting = len(self._queue) if self._queue else 0
        if self._writer is not None:
            waiting += 1  # the send in progress
        if self._handed - waiting < handed:
            return False
        progress = self._progress
        return progress is None or progress.taken() >= written

    async def send(self, event: str, data: Any = None) -> None:
        """Queue a plain event for this connection; returns once it is queued, not sent.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        if not self.is_open:
            raise ConnectionClosed(f"connection {self.id} is closed")
        self.push(encode(event, data).decode())

    async def send_to_channel(self, channel: str, event: str, data: Any = None) -> bool:
        """Queue a channel event for this connection only.

        Returns False, sending nothing, when the connection is not subscribed to ``channel``:
        a client is never sent an event for a channel it has not subscribed to.

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        if not self.is_open:
            raise ConnectionClosed(f"connection {self.id} is closed")
        if channel not in self.subscriptions:
            return False
        return self.push(encode(event, data, channel).decode())

    async def disconnect(self, reason: str = "disconnected", code: int = CloseCode.NORMAL) -> None:
        """Send a ``disconnect`` packet with ``reason`` after what is queued, then close.

        Returns once the close frame was sent, or at most after 5 s if the peer does not read
        (the writer is then cancelled). Calling it on a closing connection only waits.
        """
        self.close_soon(code, reason)
        await self.wait_closed(timeout=5.0)

    async def wait_closed(self, timeout: float) -> None:
        """Wait for a pending writer to finish; cancel it when ``timeout`` passes first."""
        writer = self._writer
        if writer is None or writer is asyncio.current_task():
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(writer)
        except TimeoutError:
            logger.warning("connection %s: peer did not take the close, dropping it", self.id)
            writer.cancel()
        except Exception:  # the writer logged it already
            pass

    def close_soon(self, code: int, reason: str, reconnect_after: float | None = None) -> None:
        """Queue ``disconnect`` (after what is queued) and the close, without waiting.

        ``reconnect_after`` (seconds) is added to the packet as a hint for clients that
        reconnect. Calling it on a closing or closed connection does nothing.
        """
        if not self.is_open:
            return
        data: dict[str, Any] = {"reason": reason}
        if reconnect_after is not None:
            data["reconnect_after"] = round(reconnect_after, 3)
        if self._queue is None:
            self._queue = deque()
        self._queue.append(encode(DISCONNECT, data).decode())
        self._closing = (code, reason)
        self._stats.closes[code] += 1
        if not self._started:
            self._closed = True
            return
        loop = asyncio.get_running_loop()
        if self._deadline is not None:  # a drop planned (`drop_later`): the close comes first
            self._deadline.cancel()
        if self._writer is None:
            self._writer = loop.create_task(self._write(None, None))
        self._deadline = loop.call_later(self._close_timeout, self._abandon)

    @property
    def can_drop(self) -> bool:
        """Whether the socket can be ended without a close frame (`drop_later`)."""
        return self._abort is not None

    def drop_later(self, delay: float) -> bool:
        """End the connection in ``delay`` seconds without a close frame; False if it cannot.

        The socket is reset, as a lost network would end it: a client that reconnects only
        after an unclean close (Envuso's) comes back. Until then the connection is served as
        usual. Returns False, doing nothing, on a connection without an ``abort`` (not served
        by uvicorn) or one already closing.
        """
        if self._abort is None or not self.is_open:
            return False
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = asyncio.get_running_loop().call_later(delay, self._abandon)
        return True

    def _abandon(self) -> None:
        """The peer has not taken the close in time: stop writing, drop the socket, unsubscribe.

        With an ``abort`` (uvicorn's transport), the socket is closed at once, its unsent
        bytes discarded; the reader then sees the disconnect and the server forgets the
        connection. Without one, the connection stops receiving anything but stays counted
        (for ``max_connections`` and the per-user cap) until the ASGI server drops the socket.
        """
        self._deadline = None
        writer = self._writer
        if writer is not None and not writer.done():
            logger.warning("connection %s: peer does not read, dropping it", self.id)
            writer.cancel()
        self.mark_closed()
        if self._abort is not None:
            try:
                self._abort()
            except Exception:
                logger.exception("connection %s: aborting the socket failed", self.id)
        if self._on_abandon is not None:
            self._on_abandon(self)

    def mark_closed(self) -> None:
        """Record that the peer went away: stop queuing; a pending writer exits after its send."""
        self._closed = True
        if self._queue:
            self._queue.clear()

    # ------------------------------------------------------------------ writing

    def _take(self) -> str:
        """The next frame to send: one packet, or a batch of what waits for a batching client."""
        queue = self._queue
        assert queue
        if not self._batch or len(queue) == 1:
            return queue.popleft()
        if len(queue) <= _BATCH_MAX:
            text = self._batches.text(queue)
            queue.clear()
            return text
        popleft = queue.popleft
        return f"[{','.join([popleft() for _ in range(_BATCH_MAX)])}]"

    def _flush(self) -> None:
        """Send what waits, in place, until it is sent or a send has to wait for the peer."""
        self._flush_scheduled = False
        queue = self._queue
        if not self._inline:
            if queue and self._writer is None and not self._closed and self._closing is None:
                self._start_writer()
            return
        while queue and self._writer is None and not self._closed and self._closing is None:
            self._send_now(self._take())
        if not queue:
            self._queue = None  # an idle connection keeps no queue

    def _start_writer(self) -> None:
        """Send what waits in a writer task: every send awaited there, none stepped in place."""
        self._writer = asyncio.get_running_loop().create_task(
            self._write(None, None), name=f"fastapi_channels writer {self.id}"
        )

    def _send_now(self, frame: str) -> None:
        """Start the transport's send in place; a send that suspends continues in a writer task.

        Sending to a peer that keeps up completes without suspending, so a broadcast costs no
        task switch, future or queue entry per recipient. Frames pushed while the writer task
        runs are queued behind the pending send, so order is kept. A direct writer, when the
        server offers one, writes the frame without a coroutine; when it cannot (the peer is
        behind, the socket is closing) the transport's send handles the frame as usual.
        """
        direct = self._direct
        if direct is not None and direct(frame):
            return
        self._send_through(frame)

    def _send_through(self, frame: str) -> None:
        """Send one frame through the transport's ``send``, in place (see `_send_now`)."""
        coro = self._transport.send_text(frame)
        # The send runs in a context of its own, as it would in a task: context variables an
        # ASGI middleware sets around ``send`` neither leak into the caller nor break when a
        # suspended send is resumed by the writer task, which runs in this same context.
        context = contextvars.copy_context()
        try:
            waiting = context.run(coro.send, None)
        except StopIteration:
            return
        except Exception as exc:  # the peer is gone; the reader notices and cleans up
            self._fail(exc)
            return
        self._writer = asyncio.get_running_loop().create_task(
            self._write(coro, waiting), name=f"fastapi_channels writer {self.id}", context=context
        )

    def _fail(self, exc: BaseException) -> None:
        logger.debug("connection %s: send failed: %r", self.id, exc)
        self._closed = True
        if self._queue:
            self._queue.clear()

    async def _write(
        self, pending: Coroutine[Any, Any, None] | None, waiting: asyncio.Future[Any] | None
    ) -> None:
        """Finish a suspended send, drain the queue, close if closing, then exit (idle)."""
        try:
            if pending is not None:
                await resume(pending, waiting)
            send = self._transport.send_text
            while not self._closed:
                if self._queue:
                    await send(self._take())
                elif self._closing is not None:
                    code, reason = self._closing
                    await self._transport.close(code, reason)
                    self._closed = True
                else:
                    self._queue = None  # drained: an idle connection keeps no queue
                    break
        except asyncio.CancelledError:
            self._fail(asyncio.CancelledError())
            raise
        except Exception as exc:
            self._fail(exc)
        finally:
            self._writer = None
            if self._closed and self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
