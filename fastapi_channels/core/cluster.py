"""Cluster-wide counts: every process answers a request on a control topic with its own counts.

Built on the broker's pub/sub contract alone (`fastapi_channels.brokers.base.Broker`), so it works
on every broker. Each process subscribes to the control topic ``x:control`` and to its own reply
topic ``x:reply:<process>``:

* at start a process announces itself (``hello``) and every other process answers ``here``, so
  each keeps a roster of the processes it knows; a clean stop announces ``bye``;
* `ClusterCounts.gather` publishes a ``count`` request; every process (this one included) answers
  on the requester's reply topic with its counts; the call returns when every process of the
  roster answered, or when the timeout passes: those that did not answer are reported as missing,
  not waited for. A process that stays missing for ``forget_after`` seconds leaves the roster.

Messages are small JSON objects; they never reach a websocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic_core import from_json, to_json

from fastapi_channels.brokers.base import Broker
from fastapi_channels.core import topics
from fastapi_channels.wire.errors import BrokerError

__all__ = ["CONTROL", "ClusterCounts", "Gathered"]

logger = logging.getLogger("fastapi_channels.cluster")

CONTROL: Final = topics.CONTROL + "control"
"""Where requests and announcements go, to every process."""
_REPLY: Final = topics.CONTROL + "reply:"


@dataclass(slots=True)
class Gathered:
    """What `ClusterCounts.gather` collected.

    Attributes:
        answers: each answering process's counts, by process name.
        missing: the processes of the roster that did not answer within the timeout.
    """

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


class ClusterCounts:
    """This process's side of the cluster-wide counts: answering requests, and making them.

    Args:
        broker: the process's broker (any kind).
        counts: returns this process's counts (JSON-ready), given how many channels to list.
        forget_after: seconds after which a process that answers nothing leaves the roster.
    """

    def __init__(
        self,
        broker: Broker,
        counts: Callable[[int], dict[str, Any]],
        forget_after: float = 300.0,
    ) -> None:
        self.broker = broker
        self.process = os.urandom(6).hex()
        """This process's name in the cluster."""
        self._counts = counts
        self._forget_after = forget_after
        self._roster: dict[str, float] = {}  # process -> when it last answered or announced
        self._requests: dict[str, tuple[Gathered, asyncio.Event, set[str]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.running = False

    @property
    def reply_topic(self) -> str:
        """This process's reply topic."""
        return _REPLY + self.process

    @property
    def roster(self) -> frozenset[str]:
        """The processes this one knows of, itself included."""
        return frozenset(self._roster) | {self.process}

    async def start(self) -> None:
        """Subscribe to the control topics and announce this process.

        A broker that cannot reach the others yet only delays the announcement's effect: the
        other processes learn of this one when it answers their next request.
        """
        await self.broker.subscribe(CONTROL)
        await self.broker.subscribe(self.reply_topic)
        self.running = True
        await self._publish(CONTROL, {"op": "hello", "from": self.process})

    async def stop(self) -> None:
        """Announce that this process leaves, and unsubscribe."""
        if not self.running:
            return
        self.running = False
        await self._publish(CONTROL, {"op": "bye", "from": self.process})
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.broker.unsubscribe(CONTROL)
        await self.broker.unsubscribe(self.reply_topic)

    async def gather(self, timeout: float, top: int = 100) -> Gathered:
        """Ask every process for its counts; wait at most ``timeout`` seconds for the answers.

        Returns as soon as every known process answered. Processes that answer first time
        here are added to the roster; known ones that do not answer in time are ``missing``.

        Raises:
            BrokerError: the request could not be published (then only this process's counts
                are known; the caller decides what to answer).
        """
        request = os.urandom(6).hex()
        gathered = Gathered()
        done = asyncio.Event()
        expected = set(self.roster)
        self._requests[request] = (gathered, done, expected)
        try:
            message = {"op": "count", "from": self.process, "req": request, "top": top}
            await self.broker.publish(CONTROL, to_json(message))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await done.wait()
        finally:
            self._requests.pop(request, None)
        now = time.monotonic()
        missing = sorted(expected - set(gathered.answers))
        for process in missing:
            if now - self._roster.get(process, now) > self._forget_after:
                del self._roster[process]
        gathered.missing = missing
        return gathered

    def on_message(self, topic: str, data: bytes) -> None:
        """Handle one control message (called with what the broker delivers on ``x:`` topics)."""
        try:
            message = from_json(data)
            op, sender = message["op"], str(message["from"])
        except (ValueError, KeyError, TypeError):
            logger.warning("dropped a malformed control message on %r", topic)
            return
        if sender != self.process:
            self._roster[sender] = time.monotonic()
        if op == "hello" and sender != self.process:
            self._send(_REPLY + sender, {"op": "here", "from": self.process})
        elif op == "bye":
            self._roster.pop(sender, None)
        elif op == "count":
            top = message.get("top")
            counts = self._counts(top if isinstance(top, int) and top >= 0 else 100)
            answer = {"op": "counts", "from": self.process, "req": message.get("req")}
            self._send(_REPLY + sender, {**answer, "counts": counts})
        elif op == "counts":
            waiting = self._requests.get(str(message.get("req")))
            if waiting is not None:
                gathered, done, expected = waiting
                gathered.answers[sender] = message.get("counts") or {}
                if expected <= set(gathered.answers):
                    done.set()

    def _send(self, topic: str, message: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._publish(topic, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, topic: str, message: dict[str, Any]) -> None:
        try:
            await self.broker.publish(topic, to_json(message))
        except BrokerError as exc:
            logger.info("control message %r not sent: %s", message.get("op"), exc)
