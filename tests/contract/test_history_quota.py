"""The contract, part two and a half: a bound on how many topics of a group keep history.

Runs on the brokers that are a `BoundedHistoryStore`: at most ``Retention.max_topics`` topics
of one group hold history at once, across processes; a topic past ``keep`` no longer counts.
"""

from __future__ import annotations

import asyncio

import pytest

from fastapi_channels import BrokerError, HistoryFull
from fastapi_channels.brokers import BoundedHistoryStore
from fastapi_channels.brokers.stores import Position, Retention
from tests.conftest import eventually
from tests.contract.conftest import Deployment, Node, fence

WIDE = Retention(size=100, ttl=None, keep=60)

STORE = BoundedHistoryStore
"""This part runs on the brokers that bound their history."""


@pytest.fixture
async def pair(deployment: Deployment) -> tuple[Node, Node]:
    """Two processes of a deployment whose broker bounds its history."""
    return await deployment.start(), await deployment.start()


BOUNDED = Retention(size=10, ttl=None, keep=60, max_topics=3, group="dm:*")


async def test_a_group_holds_history_in_at_most_max_topics(pair: tuple[Node, Node]) -> None:
    a, b = pair
    topics = [f"c:dm:{n}" for n in range(6)]
    for topic in topics:
        await a.broker.subscribe(topic)
    publishers = [a, b, a, b, a, b]
    sends = zip(publishers, topics, strict=True)
    results = await asyncio.gather(
        *(p.history.publish_stored(t, b"hi", BOUNDED) for p, t in sends),
        return_exceptions=True,
    )
    kept = [t for t, r in zip(topics, results, strict=True) if isinstance(r, Position)]
    refused = [r for r in results if not isinstance(r, Position)]
    assert len(kept) == 3  # processes publishing at once never pass the bound
    assert len(refused) == 3 and all(isinstance(r, HistoryFull) for r in refused)
    assert all(isinstance(r, BrokerError) for r in refused)  # caught as any broker failure
    delivered = await a.inbox.take(3)
    assert sorted(topic for topic, _, _ in delivered) == sorted(kept)
    await fence(b, a)  # a refused message was delivered nowhere
    for topic in kept:  # the channels that hold history carry on
        assert (await b.history.publish_stored(topic, b"more", BOUNDED)).offset == 2
    elsewhere = Retention(size=10, ttl=None, keep=60, max_topics=3, group="room:*")
    assert (await b.history.publish_stored("c:room:1", b"x", elsewhere)).offset == 1
    assert (await b.history.publish_stored("c:free", b"x", WIDE)).offset == 1


async def test_a_topic_past_keep_no_longer_counts(pair: tuple[Node, Node]) -> None:
    a, b = pair
    brief = Retention(size=10, ttl=None, keep=0.3, max_topics=1, group="dm:*")
    await a.history.publish_stored("c:dm:old", b"x", brief)
    with pytest.raises(HistoryFull):
        await b.history.publish_stored("c:dm:new", b"y", brief)

    async def freed() -> bool:
        try:
            await b.history.publish_stored("c:dm:new", b"y", brief)
        except HistoryFull:
            return False
        return True

    await eventually(freed)  # time is what expires it: there is no event to wait on
    with pytest.raises(HistoryFull):
        await a.history.publish_stored("c:dm:old", b"z", brief)


async def test_reads_count_and_a_full_group_answers_an_epoch_it_does_not_keep(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    one = Retention(size=10, ttl=None, keep=60, max_topics=1, group="dm:*")
    first = await a.history.read_stored("c:dm:1", one)
    refused = await b.history.read_stored("c:dm:2", one)
    assert (refused.top, refused.entries) == (0, [])
    assert (await b.history.read_stored("c:dm:2", one)).epoch != refused.epoch  # not kept
    with pytest.raises(HistoryFull):
        await b.history.publish_stored("c:dm:2", b"x", one)
    assert await b.history.publish_stored("c:dm:1", b"x", one) == Position(1, first.epoch)
