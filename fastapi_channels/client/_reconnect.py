"""The reconnect loop: connection attempts spaced by the `Backoff` policy until one succeeds.

The policy decides the delays and when to give up; this loop only waits and counts. Each wait
is announced first (the client turns it into a ``re-connecting`` state event) and ends early
when the client is closed, so `ChannelsClient.close` never waits out a delay. A refused
attempt ends the loop at once: retrying with the same credentials would be refused again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from fastapi_channels.client.backoff import Backoff
from fastapi_channels.client.errors import ConnectFailed, ConnectionClosed

__all__ = ["connect_with_backoff"]

logger = logging.getLogger("fastapi_channels.client")


async def connect_with_backoff(
    attempt: Callable[[], Awaitable[None]],
    backoff: Backoff | None,
    stopping: asyncio.Event,
    announce: Callable[[int, float], None],
    *,
    wait_first: bool,
    first_delay: float | None = None,
) -> None:
    """Call ``attempt`` until it succeeds, waiting the backoff delay before each retry.

    Args:
        attempt: one connection attempt; it raises `ConnectFailed` to be retried.
        backoff: the policy; ``None`` makes the first failure final.
        stopping: set by `ChannelsClient.close`; ends a wait and the loop.
        announce: called with the attempt's number (from 1) and its delay before each wait.
        wait_first: wait before the first attempt too (after a lost connection).
        first_delay: that first wait, when the server advised one (else the backoff's);
            later waits follow the backoff from its start.

    Raises:
        Refused: an attempt was refused (raised by ``attempt``, not retried).
        ConnectFailed: the policy gave up (or there is none); the last failure.
        ConnectionClosed: ``stopping`` was set meanwhile.
    """
    step = attempts = failures = 0
    wait = wait_first
    while True:
        if wait and backoff is not None:
            if first_delay is not None:
                delay, first_delay = first_delay, None
            else:
                delay = backoff.delay(step)
                step += 1
            attempts += 1
            announce(attempts, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
        if stopping.is_set():
            raise ConnectionClosed("closed by the client")
        try:
            await attempt()
            return
        except ConnectFailed as exc:
            failures += 1
            if backoff is None or backoff.gives_up_after(failures):
                raise
            logger.info("connection attempt %d failed: %s", failures, exc)
        wait = True
