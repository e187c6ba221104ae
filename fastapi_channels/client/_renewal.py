"""Automatic in-band token renewal: one timer before the token's expiry, one renewal at a time.

The timer is set from the ``exp`` of the token a connection was opened with, then from the
``expires_at`` of each successful renewal, never sooner than half the token's remaining life
(a short-lived token must not renew in a loop). A renewal that fails is logged and not retried:
the token then expires, the server closes with 4001, and the reconnect asks the token provider
for a fresh one. The timer and a renewal in flight are cancelled when the connection is lost or
the client is closed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi_channels.wire.errors import ChannelsError

__all__ = ["RenewalTimer", "jwt_expiry"]

logger = logging.getLogger("fastapi_channels.client")


class RenewalTimer:
    """Runs ``renew`` shortly before the token expires, while the client is connected.

    Args:
        renew: renews the token in-band (`ChannelsClient.renew`).
        connected: whether the connection is up; a timer firing while it is not does nothing.
    """

    def __init__(
        self, renew: Callable[[], Awaitable[object]], connected: Callable[[], bool]
    ) -> None:
        self._renew = renew
        self._connected = connected
        self._timer: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None

    def schedule(self, expires_at: object, before: float | None) -> None:
        """Plan the next renewal ``before`` seconds ahead of ``expires_at`` (Unix seconds).

        Replaces the planned one. Plans nothing when ``before`` is ``None`` (off) or
        ``expires_at`` is not a time in the future.
        """
        self._cancel_timer()
        if before is None or not isinstance(expires_at, int | float):
            return
        remaining = expires_at - time.time()
        if remaining <= 0:
            return
        delay = max(remaining - before, remaining / 2)
        self._timer = asyncio.get_running_loop().call_later(delay, self._start)

    def cancel(self) -> None:
        """Cancel the planned renewal and the one running, unless called from within it."""
        self._cancel_timer()
        running, self._running = self._running, None
        if running is not None and running is not asyncio.current_task():
            running.cancel()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start(self) -> None:
        self._timer = None
        if self._connected() and (self._running is None or self._running.done()):
            self._running = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._renew()
        except (ChannelsError, TimeoutError, ValueError) as exc:
            if self._connected():  # lost meanwhile: the reconnect asks the provider anyway
                logger.warning("renewing the token failed: %s", exc)


def jwt_expiry(token: str | None) -> float | None:
    """The ``exp`` claim of a JWT, unverified (only used to time a renewal); else ``None``."""
    parts = token.split(".") if token else []
    if len(parts) != 3:
        return None
    try:
        claims: Any = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None
