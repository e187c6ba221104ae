"""Limits: values checked, rate, connections per user and process, handshake deadline, drain."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from fastapi import FastAPI

from fastapi_channels import (
    Channels,
    ConfigurationError,
    Limits,
    OverflowPolicy,
    SocketConnection,
    SocketListener,
    SocketPacket,
    listener,
)
from fastapi_channels.testing import SocketTestClient, lifespan
from tests.conftest import Start, user_from_query


async def test_rate_limit_answers_then_closes_with_1008(start: Start) -> None:
    harness = await start(limits=Limits(rate=0.5, burst=2, rate_strikes=3))
    async with harness.client("a") as client, harness.client("b") as other:
        for _ in range(2):
            await client.emit("x")
            assert (await client.receive()).data["code"] == "unknown-event"
        for _ in range(2):
            await client.emit("x")
            assert (await client.receive()).data == {
                "code": "rate-limited",
                "message": "too many packets; slow down",
            }
        await client.emit("x")
        assert (await client.receive()).data == {"reason": "rate limit exceeded"}
        assert await client.receive_closed() == (1008, "rate limit exceeded")
        await other.emit("x")  # the others keep their own budget
        assert (await other.receive()).data["code"] == "unknown-event"


async def test_connections_per_user(start: Start) -> None:
    harness = await start(limits=Limits(max_connections_per_user=2))
    async with harness.client("a"), harness.client("a"), harness.client("b"):
        third = harness.client("a")
        assert await third.connect() == {
            "event": "disconnect",
            "data": {"reason": "too many connections"},
        }
        assert await third.receive_closed() == (1008, "too many connections")
    async with harness.client("a") as again:  # freed once the others left
        assert again.ready is not None


async def test_connections_per_process(start: Start) -> None:
    harness = await start(limits=Limits(max_connections=2))
    async with harness.client("a"), harness.client("b"):
        third = harness.client("c")
        assert (await third.connect()).data == {"reason": "server busy"}
        assert await third.receive_closed() == (1013, "server busy")


async def test_a_handshake_that_takes_too_long_is_refused(start: Start) -> None:
    never = asyncio.Event()

    async def slow_user() -> None:
        await never.wait()

    harness = await start(user=slow_user, limits=Limits(handshake_timeout=0.2))
    client = SocketTestClient(harness.app, subprotocols=["t"])
    assert (await client.connect()).data == {"reason": "handshake timed out"}
    assert client.subprotocol == "t"
    assert await client.receive_closed() == (1000, "handshake timed out")


started = asyncio.Event()
release = asyncio.Event()


@listener("slow")
class Slow(SocketListener):
    async def handle(self, connection: SocketConnection, user: Any, packet: SocketPacket) -> None:
        started.set()
        await release.wait()
        await connection.send("done")


async def test_shutdown_lets_in_flight_handlers_finish_then_closes_with_1012() -> None:
    started.clear()
    release.clear()
    channels = Channels(user=user_from_query, listeners=[Slow], limits=Limits(shutdown_timeout=5))
    app = FastAPI()
    app.include_router(channels.router)
    context = lifespan(app)
    await context.__aenter__()
    busy = SocketTestClient(app, query_string="user=a")
    idle = SocketTestClient(app, query_string="user=b")
    await busy.expect_ready()
    await idle.expect_ready()
    await busy.emit("slow")
    async with asyncio.timeout(2):
        await started.wait()
    stopping = asyncio.ensure_future(context.__aexit__(None, None, None))
    async with asyncio.timeout(2):
        await channels.stopping.wait()
    await idle.emit("slow")
    assert (await idle.receive()).data == {
        "code": "shutting-down",
        "message": "server shutting down",
        "event": "slow",
    }
    assert not stopping.done()
    release.set()
    assert (await busy.receive()).event == "done"
    assert (await busy.receive()).data["reason"] == "server shutting down"
    assert (await busy.receive_closed())[0] == 1012
    assert (await idle.receive()).event == "disconnect"
    async with asyncio.timeout(5):
        await stopping


COUNT = "an integer of at least 1"
SECONDS = "a finite number of seconds above 0"
SPAN = "a finite number of seconds, 0 or more"

BAD_LIMITS = [
    ("max_message_size", 0, COUNT),
    ("max_message_size", 1.5, COUNT),
    ("max_message_size", True, COUNT),
    ("max_name_length", -1, COUNT),
    ("max_subscriptions", "10", COUNT),
    ("queue_size", 0, COUNT),
    ("queue_size", None, COUNT),
    ("burst", 0, COUNT),
    ("rate_strikes", False, COUNT),
    ("max_connections", 0, f"{COUNT}, or None"),
    ("max_connections_per_user", 2.0, f"{COUNT}, or None"),
    ("max_connections_per_user", True, f"{COUNT}, or None"),
    ("handler_timeout", 0, f"{SECONDS}, or None"),
    ("handler_timeout", float("nan"), f"{SECONDS}, or None"),
    ("handler_timeout", "30", f"{SECONDS}, or None"),
    ("close_timeout", 0.0, SECONDS),
    ("close_timeout", None, SECONDS),
    ("handshake_timeout", -1, SECONDS),
    ("handshake_timeout", float("inf"), SECONDS),
    ("handshake_timeout", True, SECONDS),
    ("shutdown_timeout", -0.5, SPAN),
    ("reconnect_spread", None, SPAN),
    ("rate", 0, "a finite number of packets per second above 0, or None"),
    ("rate", True, "a finite number of packets per second above 0, or None"),
    ("direct_writes", 1, "True or False"),
    ("direct_writes", None, "True or False"),
    ("overflow", "drop_oldest", "an OverflowPolicy or one of 'drop-oldest', 'drop-newest'"),
    ("overflow", None, "an OverflowPolicy or one of"),
    ("overflow", ["disconnect"], "an OverflowPolicy or one of"),
]


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    BAD_LIMITS,
    ids=[f"{field}={value!r}" for field, value, _ in BAD_LIMITS],
)
def test_bad_limits_are_refused_naming_the_field(field: str, value: Any, accepted: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Limits(**{field: value})
    assert str(refused.value).startswith(f"Limits.{field} must be {accepted}")
    assert str(refused.value).endswith(f", not {value!r}")


def test_limits_at_the_edge_of_their_ranges_are_accepted() -> None:
    Limits(
        max_message_size=1,
        max_name_length=1,
        max_subscriptions=1,
        queue_size=1,
        burst=1,
        rate_strikes=1,
        max_connections=1,
        max_connections_per_user=1,
        handler_timeout=0.001,
        close_timeout=0.001,
        handshake_timeout=1,  # an int is a number of seconds too
        rate=0.1,
        shutdown_timeout=0,
        reconnect_spread=0,
        direct_writes=False,
    )
    Limits(handler_timeout=None, rate=None, max_connections=None, max_connections_per_user=None)


@pytest.mark.parametrize("policy", list(OverflowPolicy), ids=lambda p: p.value)
def test_an_overflow_policy_may_be_given_by_its_value(policy: OverflowPolicy) -> None:
    limits = Limits(overflow=policy.value)  # type: ignore[arg-type]
    assert limits.overflow is policy  # the connection compares policies by identity
    assert Limits(overflow=policy).overflow is policy


def test_the_overflow_message_lists_every_policy() -> None:
    values = ", ".join(repr(policy.value) for policy in OverflowPolicy)
    message = f"Limits.overflow must be an OverflowPolicy or one of {values}, not 'slow'"
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        Limits(overflow="slow")  # type: ignore[arg-type]
