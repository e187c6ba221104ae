"""The contract, part two: history, on every broker that is a `HistoryStore`.

Positions (offsets from 1 without gaps, in one epoch), reads (``after``, retention by size and
age, a read giving a new topic its epoch), and stored messages reaching every interested
process in offset order through the handler given to ``deliver_stored_to``.
"""

from __future__ import annotations

import asyncio

import pytest

from fastapi_channels.brokers import HistoryStore
from fastapi_channels.brokers.stores import Position, Retention, StoredEntry
from tests.conftest import eventually
from tests.contract.conftest import Deployment, Node, fence

KEEP = Retention(size=3, ttl=None, keep=60)
WIDE = Retention(size=100, ttl=None, keep=60)

STORE = HistoryStore
"""This part runs on the brokers that are a `HistoryStore`."""


@pytest.fixture
async def pair(deployment: Deployment) -> tuple[Node, Node]:
    """Two processes of a deployment whose broker keeps history."""
    return await deployment.start(), await deployment.start()


async def test_positions_count_from_one_without_gaps_in_one_epoch(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    publishers = [a, b, a, b, a, a, b, b, a, b]
    sent = await asyncio.gather(
        *(p.history.publish_stored("c:x", b"%d" % n, WIDE) for n, p in enumerate(publishers))
    )
    epoch = sent[0].epoch
    assert sorted(position.offset for position in sent) == list(range(1, 11))
    assert {position.epoch for position in sent} == {epoch}
    stored = await b.history.read_stored("c:x", WIDE)
    assert (stored.epoch, stored.top) == (epoch, 10)
    by_offset = {position.offset: b"%d" % n for n, position in enumerate(sent)}
    assert stored.entries == [StoredEntry(offset, by_offset[offset]) for offset in range(1, 11)]
    assert (await a.history.publish_stored("c:x", b"next", WIDE)) == Position(11, epoch)


async def test_stored_messages_reach_every_process_in_offset_order(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    for node in pair:
        await node.broker.subscribe("c:x")
    publishers = [a, b, a, b, a]
    sent = await asyncio.gather(
        *(p.history.publish_stored("c:x", b"%d" % n, KEEP) for n, p in enumerate(publishers))
    )
    epoch = sent[0].epoch
    got_a, got_b = await a.inbox.take(5), await b.inbox.take(5)
    assert got_a == got_b  # one order for every process, the publishers' included
    assert [position for _, _, position in got_a] == [Position(n, epoch) for n in range(1, 6)]
    assert {p: d for _, d, p in got_a} == {p: b"%d" % n for n, p in enumerate(sent)}
    await fence(b, a, b)
    await fence(a, a, b)  # each message came once, stored, and not again as a plain one


async def test_stored_messages_reach_only_interested_processes(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await a.broker.subscribe("c:only-a")
    position = await b.history.publish_stored("c:only-a", b"for a", KEEP)
    assert await a.inbox.get() == ("c:only-a", b"for a", position)
    await b.history.publish_stored("c:other", b"for nobody", KEEP)
    await a.broker.unsubscribe("c:only-a")
    await b.history.publish_stored("c:only-a", b"after a left", KEEP)
    await fence(b, a, b)
    a.history.deliver_stored_to(None)  # a handler no more: stored messages go nowhere
    await a.broker.subscribe("c:only-a")
    await b.history.publish_stored("c:only-a", b"no handler", KEEP)
    await fence(b, a)
    for node in pair:
        node.inbox.assert_empty()


async def test_a_read_gives_a_new_topic_the_epoch_it_keeps(pair: tuple[Node, Node]) -> None:
    a, b = pair
    empty = await b.history.read_stored("c:new", KEEP)
    assert (empty.top, empty.entries) == (0, [])
    assert (await b.history.read_stored("c:new", KEEP)).epoch == empty.epoch
    assert await a.history.publish_stored("c:new", b"first", KEEP) == Position(1, empty.epoch)


async def test_reads_keep_the_retention_and_start_after(pair: tuple[Node, Node]) -> None:
    a, b = pair
    for n in range(5):
        await a.history.publish_stored("c:r", b"%d" % n, KEEP)
    stored = await b.history.read_stored("c:r", KEEP)
    assert (stored.top, stored.entries) == (5, [StoredEntry(n, b"%d" % (n - 1)) for n in (3, 4, 5)])
    assert (await b.history.read_stored("c:r", KEEP, after=1)).entries == stored.entries
    assert (await b.history.read_stored("c:r", KEEP, after=4)).entries == [StoredEntry(5, b"4")]
    after_top = await b.history.read_stored("c:r", KEEP, after=5)
    assert (after_top.top, after_top.entries) == (5, [])
    smaller = Retention(size=2, ttl=None, keep=60)
    assert (await b.history.read_stored("c:r", smaller)).entries == [
        StoredEntry(4, b"3"),
        StoredEntry(5, b"4"),
    ]


async def test_messages_older_than_the_ttl_are_not_read(pair: tuple[Node, Node]) -> None:
    a, b = pair
    short = Retention(size=100, ttl=0.2, keep=60)
    first = await a.history.publish_stored("c:t", b"soon gone", short)

    async def expired() -> bool:
        return not (await b.history.read_stored("c:t", short)).entries

    await eventually(expired)  # time is what expires it: there is no event to wait on
    assert await a.history.publish_stored("c:t", b"next", short) == Position(2, first.epoch)
    assert (await b.history.read_stored("c:t", short)).entries == [StoredEntry(2, b"next")]


async def test_a_topic_idle_past_keep_starts_a_new_epoch(pair: tuple[Node, Node]) -> None:
    a, b = pair
    brief = Retention(size=10, ttl=None, keep=0.2)
    first = await a.history.publish_stored("c:k", b"old", brief)

    async def forgotten() -> bool:
        return (await b.history.read_stored("c:k", brief)).epoch != first.epoch

    await eventually(forgotten)
    again = await a.history.publish_stored("c:k", b"new", brief)
    assert again.offset == 1 and again.epoch != first.epoch


async def test_stored_bytes_pass_unchanged(pair: tuple[Node, Node]) -> None:
    a, b = pair
    payloads = [bytes(range(256)), b"", bytes(range(256)) * 1024]
    for node in pair:
        await node.broker.subscribe("c:bytes")
    sent = [await a.history.publish_stored("c:bytes", data, WIDE) for data in payloads]
    expected = [("c:bytes", data, position) for data, position in zip(payloads, sent, strict=True)]
    for node in pair:
        assert await node.inbox.take(len(payloads)) == expected
    stored = await b.history.read_stored("c:bytes", WIDE)
    assert [entry.data for entry in stored.entries] == payloads
