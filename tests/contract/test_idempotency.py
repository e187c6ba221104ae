"""The contract, part four: idempotent publishing, on every broker that is an `IdempotencyStore`.

A message published with a key reaches every process once; the same key on the same topic
within the window publishes nothing, from any process; keys are per topic; a stored message is
stored once and a duplicate answers the first one's position; the key is forgotten after its
window.
"""

from __future__ import annotations

import asyncio

import pytest

from fastapi_channels.brokers import IdempotencyStore
from fastapi_channels.brokers.stores import Retention, StoredEntry
from tests.conftest import eventually
from tests.contract.conftest import Deployment, Node, fence

WIDE = Retention(size=100, ttl=None, keep=60)

STORE = IdempotencyStore
"""This part runs on the brokers that are an `IdempotencyStore`."""


def once(node: Node) -> IdempotencyStore:
    assert isinstance(node.broker, IdempotencyStore)
    return node.broker


@pytest.fixture
async def pair(deployment: Deployment) -> tuple[Node, Node]:
    a, b = await deployment.start(), await deployment.start()
    for node in (a, b):
        await node.broker.subscribe("c:x")
    return a, b


async def test_a_key_publishes_once_on_every_process(pair: tuple[Node, Node]) -> None:
    a, b = pair
    first = await once(a).publish_once("c:x", b"hi", "k1", 60)
    assert not first.duplicate
    assert await a.inbox.get() == ("c:x", b"hi", None)
    assert await b.inbox.get() == ("c:x", b"hi", None)
    again = await asyncio.gather(
        once(a).publish_once("c:x", b"hi", "k1", 60),
        once(b).publish_once("c:x", b"hi", "k1", 60),
    )
    assert [p.duplicate for p in again] == [True, True]
    await once(b).publish_once("c:x", b"next", "k2", 60)
    for node in (a, b):  # the next delivery is the next key's: the duplicates went nowhere
        assert await node.inbox.get() == ("c:x", b"next", None)
    await fence(a, b)
    await fence(b, a)
    a.inbox.assert_empty()


async def test_keys_are_per_topic(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await b.broker.subscribe("c:y")
    assert not (await once(a).publish_once("c:x", b"1", "k", 60)).duplicate
    assert not (await once(a).publish_once("c:y", b"2", "k", 60)).duplicate
    got = sorted(await b.inbox.take(2))
    assert got == [("c:x", b"1", None), ("c:y", b"2", None)]


async def test_a_stored_message_is_stored_once(pair: tuple[Node, Node]) -> None:
    a, b = pair
    first = await once(a).publish_once("c:x", b"hi", "k", 60, WIDE)
    assert not first.duplicate and first.position is not None
    second = await once(b).publish_once("c:x", b"hi", "k", 60, WIDE)
    assert second.duplicate and second.position == first.position
    assert await b.inbox.get() == ("c:x", b"hi", first.position)
    stored = await b.history.read_stored("c:x", WIDE)
    assert stored.entries == [StoredEntry(first.position.offset, b"hi")]


async def test_a_key_is_forgotten_after_its_window(pair: tuple[Node, Node]) -> None:
    a, b = pair
    assert not (await once(a).publish_once("c:x", b"1", "k", 0.2)).duplicate

    async def published_again() -> bool:
        return not (await once(b).publish_once("c:x", b"2", "k", 0.2)).duplicate

    await eventually(published_again)
    assert [d[1] for d in await b.inbox.take(2)] == [b"1", b"2"]
