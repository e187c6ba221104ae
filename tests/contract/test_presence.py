"""The contract, part three: presence, on every broker that is a `PresenceStore`.

Members are registered per process and shared by all; a member joins when its first holder
registers it and leaves when its last lets go, each announced once on the topic to every
interested process; renewals keep a process alive, and the members of a process that stops
renewing (or retires) are swept by the others; a sweep tells a process where its records differ.
"""

from __future__ import annotations

import pytest

from fastapi_channels.brokers import PresenceStore
from fastapi_channels.brokers.stores import Announcements, PresenceSnapshot
from tests.conftest import eventually
from tests.contract.conftest import Deployment, Node, fence

ANNOUNCE = Announcements(join=(b"+", b";"), leave=(b"-", b";"))

STORE = PresenceStore
"""This part runs on the brokers that are a `PresenceStore`."""


@pytest.fixture
async def pair(deployment: Deployment) -> tuple[Node, Node]:
    """Two processes of a deployment whose broker keeps presence, subscribed to ``p:x``."""
    nodes = await deployment.start(), await deployment.start()
    for node in nodes:
        await node.broker.subscribe("p:x")
    return nodes


async def alive(*nodes: Node) -> None:
    for node in nodes:
        await node.presence.presence_renew(30)


async def announced(node: Node, count: int) -> list[bytes]:
    """The next ``count`` announcements ``node`` received, on ``p:x``."""
    deliveries = await node.inbox.take(count)
    assert all(topic == "p:x" and position is None for topic, _, position in deliveries)
    return [data for _, data, _ in deliveries]


async def test_a_renewal_says_whether_the_process_was_alive(pair: tuple[Node, Node]) -> None:
    a, _ = pair
    assert await a.presence.presence_renew(30) is False  # the first one: register everything
    assert await a.presence.presence_renew(30) is True
    await a.presence.presence_retire()
    assert await a.presence.presence_renew(30) is False  # retired: register again


async def test_members_are_shared_and_announced_once(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await alive(a, b)
    joined = await a.presence.presence_update("p:x", {"ann": b"A", "bob": b"B"}, [], ANNOUNCE)
    assert joined == (["ann", "bob"], [])
    # bob is held by both processes now; his info is the first holder's.
    assert await b.presence.presence_update("p:x", {"bob": b"B2"}, [], ANNOUNCE) == ([], [])
    for node in pair:
        assert await node.presence.presence_members("p:x", ANNOUNCE) == {"ann": b"A", "bob": b"B"}
        assert await node.presence.presence_count("p:x", ANNOUNCE) == 2
    assert await a.presence.presence_update("p:x", {}, ["bob", "ann"], ANNOUNCE) == ([], ["ann"])
    assert await b.presence.presence_members("p:x", ANNOUNCE) == {"bob": b"B"}
    assert await b.presence.presence_update("p:x", {}, ["bob"], ANNOUNCE) == ([], ["bob"])
    assert await a.presence.presence_count("p:x", ANNOUNCE) == 0
    assert await a.presence.presence_members("p:x", ANNOUNCE) == {}
    expected = [b"+A;", b"+B;", b"-A;", b"-B;"]
    for node in pair:
        assert await announced(node, 4) == expected  # one order for every process
    await fence(b, a, b)


async def test_updates_are_idempotent(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await alive(a, b)
    assert await a.presence.presence_update("p:x", {"ann": b"A"}, [], ANNOUNCE) == (["ann"], [])
    assert await a.presence.presence_update("p:x", {"ann": b"A"}, [], ANNOUNCE) == ([], [])
    assert await a.presence.presence_update("p:x", {}, ["nobody"], ANNOUNCE) == ([], [])
    assert await b.presence.presence_update("p:x", {}, ["ann"], ANNOUNCE) == ([], [])  # not b's
    joined, left = await a.presence.presence_update("p:x", {"bob": b"B"}, ["ann"], ANNOUNCE)
    assert (joined, left) == (["bob"], ["ann"])
    assert await a.presence.presence_update("p:x", {}, ["ann"], ANNOUNCE) == ([], [])
    assert await b.presence.presence_members("p:x", ANNOUNCE) == {"bob": b"B"}
    assert await announced(a, 1) == [b"+A;"]
    assert sorted(await announced(a, 2)) == [b"+B;", b"-A;"]  # one step: no order promised
    await fence(b, a)


async def test_sync_makes_this_process_s_members_exactly_those(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await alive(a, b)
    await a.presence.presence_update("p:x", {"ann": b"A", "bob": b"B"}, [], ANNOUNCE)
    await b.presence.presence_update("p:x", {"dee": b"D"}, [], ANNOUNCE)
    assert sorted(await announced(a, 3)) == [b"+A;", b"+B;", b"+D;"]
    await a.presence.presence_sync("p:x", {"bob": b"B", "cy": b"C"}, ANNOUNCE)
    assert sorted(await announced(a, 2)) == [b"+C;", b"-A;"]
    members = {"bob": b"B", "cy": b"C", "dee": b"D"}  # b's members are b's
    assert await b.presence.presence_members("p:x", ANNOUNCE) == members
    await a.presence.presence_sync("p:x", {"bob": b"B", "cy": b"C"}, ANNOUNCE)  # no change
    await a.presence.presence_sync("p:x", {}, ANNOUNCE)
    assert sorted(await announced(a, 2)) == [b"-B;", b"-C;"]
    assert await a.presence.presence_count("p:x", ANNOUNCE) == 1
    await fence(b, a)


async def test_the_members_of_a_process_that_stops_renewing_are_swept(
    pair: tuple[Node, Node],
) -> None:
    a, dead = pair
    await a.presence.presence_renew(30)
    await dead.presence.presence_renew(1.0)  # and never again
    await dead.presence.presence_update("p:x", {"zed": b"Z"}, [], ANNOUNCE)
    await a.presence.presence_update("p:x", {"ann": b"A"}, [], ANNOUNCE)
    assert await a.presence.presence_sweep({"p:x": 1}, {"p:x": ANNOUNCE}) == []
    assert await a.presence.presence_count("p:x", ANNOUNCE) == 2

    async def swept() -> bool:
        return await a.presence.presence_sweep({"p:x": 1}, {"p:x": ANNOUNCE}) == [] and (
            await a.presence.presence_count("p:x", ANNOUNCE) == 1
        )

    await eventually(swept)  # time is what kills it: there is no event to wait on
    assert await announced(a, 3) == [b"+Z;", b"+A;", b"-Z;"]
    assert await a.presence.presence_members("p:x", ANNOUNCE) == {"ann": b"A"}
    assert await dead.presence.presence_renew(30) is False  # too late: it must resync
    # A process whose records differ from what it believes is told to resync.
    assert await a.presence.presence_sweep({"p:x": 2}, {"p:x": ANNOUNCE}) == ["p:x"]
    assert await dead.presence.presence_sweep({"p:x": 1}, {"p:x": ANNOUNCE}) == ["p:x"]
    await fence(a, a)


async def test_a_retired_process_s_members_are_swept_at_once(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await alive(a, b)
    await a.presence.presence_update("p:x", {"ann": b"A", "bob": b"B"}, [], ANNOUNCE)
    await b.presence.presence_update("p:x", {"bob": b"B", "cy": b"C"}, [], ANNOUNCE)
    await b.presence.presence_retire()
    assert await a.presence.presence_members("p:x", ANNOUNCE) == {"ann": b"A", "bob": b"B"}
    assert await announced(a, 4) == [b"+A;", b"+B;", b"+C;", b"-C;"]  # bob is still a's
    assert await b.presence.presence_renew(30) is False
    await fence(a, a)


async def test_member_info_passes_unchanged(pair: tuple[Node, Node]) -> None:
    a, b = pair
    await alive(a, b)
    info = {"all": bytes(range(256)), "empty": b"", "big": bytes(range(256)) * 64}
    await a.presence.presence_update("p:x", info, [], ANNOUNCE)
    assert await b.presence.presence_members("p:x", ANNOUNCE) == info
    assert sorted(await announced(b, 3)) == sorted(b"+" + data + b";" for data in info.values())


async def test_a_store_that_lost_its_records_reads_partial_lists_until_it_settled(
    deployment: Deployment, pair: tuple[Node, Node]
) -> None:
    a, b = pair
    await alive(a, b)  # first renewals (was_alive False): a fresh store is settled
    await a.presence.presence_update("p:x", {"ann": b"A"}, [], ANNOUNCE)
    await b.presence.presence_update("p:x", {"bob": b"B"}, [], ANNOUNCE)
    assert await announced(a, 2) == [b"+A;", b"+B;"]
    whole = await a.presence.presence_snapshot("p:x", ANNOUNCE)
    assert whole == PresenceSnapshot({"ann": b"A", "bob": b"B"}, partial=False, registered=True)

    assert deployment.forget is not None
    await deployment.forget()  # Redis restarted, empty
    before = await a.presence.presence_snapshot("p:x", ANNOUNCE)
    assert (before.partial, before.registered) == (True, False)  # a has not renewed yet
    assert await a.presence.presence_renew(30, was_alive=True) is False  # forgotten
    await a.presence.presence_sync("p:x", {"ann": b"A"}, ANNOUNCE)
    refilling = await b.presence.presence_snapshot("p:x", ANNOUNCE)  # b has not renewed yet
    assert refilling.members == {"ann": b"A"} and refilling.partial
    assert await b.presence.presence_renew(30, was_alive=True) is False
    await b.presence.presence_sync("p:x", {"bob": b"B"}, ANNOUNCE)
    refilled = await a.presence.presence_snapshot("p:x", ANNOUNCE)
    assert refilled.members == {"ann": b"A", "bob": b"B"}
    assert refilled.partial and 0 < refilled.settles_in <= 30  # until a's renewal timeout
    assert await announced(a, 2) == [b"+A;", b"+B;"]  # joins again, and never a leave
    await fence(b, a)


async def test_the_store_settles_one_timeout_after_it_found_its_loss(
    deployment: Deployment, pair: tuple[Node, Node]
) -> None:
    a, b = pair
    await alive(a, b)
    assert deployment.forget is not None
    await deployment.forget()
    await a.presence.presence_renew(0.3, was_alive=True)  # opens the window, for 0.3 s
    assert await a.presence.presence_renew(30, was_alive=True) is True
    assert await b.presence.presence_renew(30) is False  # a fresh process opens none

    async def settled() -> bool:
        return not (await b.presence.presence_snapshot("p:x", ANNOUNCE)).partial

    assert (await b.presence.presence_snapshot("p:x", ANNOUNCE)).partial
    await eventually(settled)  # time is what settles it: there is no event to wait on


async def test_a_late_process_among_live_ones_leaves_the_store_settled(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    await alive(a, b)
    await a.presence.presence_retire()  # as if a had missed its renewal
    assert await a.presence.presence_renew(30, was_alive=True) is False
    assert not (await b.presence.presence_snapshot("p:x", ANNOUNCE)).partial
