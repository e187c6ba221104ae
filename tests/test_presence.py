"""Presence channels, on both brokers: members are users, across connections and processes."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import pytest

from fastapi_channels import (
    ChannelListener,
    ConfigurationError,
    InvalidChannel,
    SocketConnection,
    channel,
)
from fastapi_channels.brokers.base import BrokerState
from fastapi_channels.brokers.redis import RedisBroker
from fastapi_channels.testing import ReceivedPacket, SocketTestClient, lifespan
from tests.conftest import BareBroker, Harness, Start, eventually
from tests.proxy import tcp_proxy

TIMEOUT = 5.0
SHORT = 0.6
"""A presence timeout short enough for a dead process's members to go within a test."""


@channel("room:*")
class Room(ChannelListener):
    presence = True

    def member_info(self, connection: SocketConnection, user: Any) -> dict[str, Any]:
        return {"id": user["id"], "name": user["name"].title(), "room": self.wildcard}


@channel("lobby")
class Lobby(ChannelListener):
    """A presence channel with the default member info, async for once."""

    presence = True

    async def member_info(self, connection: SocketConnection, user: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"id": connection.user_key}


@channel("broken")
class Broken(ChannelListener):
    presence = True

    def member_info(self, connection: SocketConnection, user: Any) -> dict[str, Any]:
        raise RuntimeError("the user store is down")


@channel("plain")
class Plain(ChannelListener):
    pass


LISTENERS = [Room, Lobby, Broken, Plain]


def member(name: str, room: str = "1") -> dict[str, Any]:
    return {"id": name, "name": name.title(), "room": room}


async def subscribed(client: SocketTestClient, name: str) -> list[dict[str, Any]]:
    """Subscribe; return the member list that must follow the response."""
    assert (await client.subscribe(name))["successful"]
    packet = await client.receive(TIMEOUT)
    assert packet.event == "channels:presence", packet
    assert "channel" not in packet  # a plain event: the Envuso client ignores it
    assert packet.data["channel"] == name
    members: list[dict[str, Any]] = packet.data["members"]
    return members


async def event(client: SocketTestClient) -> tuple[str, dict[str, Any]]:
    """The next packet, which must be a join or a leave: its kind and its member."""
    packet: ReceivedPacket = await client.receive(TIMEOUT)
    assert packet.event in ("channels:join", "channels:leave"), packet
    assert "channel" not in packet
    return packet.event.removeprefix("channels:"), packet.data["member"]


async def test_subscribers_get_the_members_then_joins_and_leaves(start: Start) -> None:
    app = await start(listeners=LISTENERS)
    async with app.client("ann") as ann:
        assert await subscribed(ann, "room:1") == [member("ann")]  # without its own join after
        async with app.client("bob") as bob:
            assert await subscribed(bob, "room:1") == [member("ann"), member("bob")]
            assert await event(ann) == ("join", member("bob"))
            await bob.unsubscribe("room:1")
            assert await event(ann) == ("leave", member("bob"))
            assert (await bob.subscribe("room:1"))["successful"]
            assert await event(ann) == ("join", member("bob"))
        assert await event(ann) == ("leave", member("bob"))  # bob's connection closed
        await ann.assert_no_message()


async def test_a_join_made_while_the_member_list_is_read_is_not_sent_after_it(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob joins (on another process) while ann's member list is being read: the list shows
    him, and no join of his follows it; zoe, already subscribed, gets both joins."""
    a = await start(listeners=LISTENERS)
    b = await start(listeners=LISTENERS)
    async with a.client("zoe") as zoe, a.client("ann") as ann, b.client("bob") as bob:
        await subscribed(zoe, "room:1")
        presence, reading, gate = a.server.presence_tracker, asyncio.Event(), asyncio.Event()
        read = presence.snapshot

        async def held_back(channel: str) -> Any:
            reading.set()
            await gate.wait()
            return await read(channel)

        monkeypatch.setattr(presence, "snapshot", held_back)
        subscribing = asyncio.ensure_future(ann.subscribe("room:1"))
        async with asyncio.timeout(TIMEOUT):
            await reading.wait()
        assert await event(zoe) == ("join", member("ann"))
        assert len(await subscribed(bob, "room:1")) == 3
        assert await event(zoe) == ("join", member("bob"))  # process a routed it: held for ann
        gate.set()
        assert (await subscribing)["successful"]
        listed = await ann.receive(TIMEOUT)
        assert listed.event == "channels:presence"
        assert listed.data["members"] == [member("ann"), member("bob"), member("zoe")]
        await ann.assert_no_message()


async def test_several_connections_of_a_user_are_one_member(start: Start) -> None:
    a = await start(listeners=LISTENERS)
    b = await start(listeners=LISTENERS)  # another process of the same deployment
    async with a.client("ann") as ann, a.client("bob") as bob_1:
        await subscribed(ann, "room:1")
        await subscribed(bob_1, "room:1")
        assert await event(ann) == ("join", member("bob"))
        async with a.client("bob") as bob_2, b.client("bob") as bob_3:
            assert len(await subscribed(bob_2, "room:1")) == 2
            assert len(await subscribed(bob_3, "room:1")) == 2
            assert await a.server.presence_count("room:1") == 2
            assert await b.server.presence_count("room:1") == 2
            await bob_1.close()
        # bob_2 and bob_3 are gone too now; only the last one made bob leave.
        assert await event(ann) == ("leave", member("bob"))
        await ann.assert_no_message()
        assert await b.server.presence("room:1") == [member("ann")]


async def test_the_server_side_reads_members_from_any_process(start: Start) -> None:
    a = await start(listeners=LISTENERS)
    b = await start(listeners=LISTENERS)
    async with a.client("ann") as ann, b.client("cy") as cy:
        await subscribed(ann, "room:7")
        assert await subscribed(cy, "room:7") == [member("ann", "7"), member("cy", "7")]
        for app in (a, b):
            assert await app.server.presence("room:7") == [member("ann", "7"), member("cy", "7")]
            assert await app.server.presence_count("room:7") == 2
            assert await app.server.presence("room:8") == []
        assert a.server.presence_tracker.local_members("room:7") == {"ann": member("ann", "7")}


async def test_anonymous_subscribers_see_members_but_are_not_members(start: Start) -> None:
    app = await start(listeners=LISTENERS)
    async with app.client() as anonymous, app.client("ann") as ann:
        assert await subscribed(anonymous, "lobby") == []
        assert await subscribed(ann, "lobby") == [{"id": "ann"}]
        assert await event(anonymous) == ("join", {"id": "ann"})
        assert await app.server.presence_count("lobby") == 1
        await anonymous.close()
        await ann.assert_no_message()


async def test_failing_member_info_lists_the_member_by_id(start: Start) -> None:
    app = await start(listeners=LISTENERS)
    async with app.client("ann") as ann:
        assert await subscribed(ann, "broken") == [{"id": "ann"}]


async def test_a_plain_channel_sends_no_presence(start: Start) -> None:
    app = await start(listeners=LISTENERS)
    async with app.client("ann") as ann:
        response = await ann.subscribe("plain")
        assert response == {"channel": "plain", "successful": True}
        await ann.assert_no_message()
        with pytest.raises(InvalidChannel):
            await app.server.presence("plain")
        with pytest.raises(InvalidChannel):
            await app.server.presence_count("nowhere")


async def test_a_dead_process_leaves_no_ghost(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await start(listeners=LISTENERS, presence_timeout=SHORT)
    dying = await start(listeners=LISTENERS, presence_timeout=SHORT)
    async with a.client("ann") as ann, dying.client("zed") as zed:
        await subscribed(ann, "room:1")
        await subscribed(zed, "room:1")
        assert await event(ann) == ("join", member("zed"))

        # The process stops renewing (as if it had died; its socket stays open here).
        async def dead() -> None:
            return None

        monkeypatch.setattr(dying.server.presence_tracker, "renew", dead)
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert await event(ann) == ("leave", member("zed"))
        assert loop.time() - began <= SHORT * 4 / 3 + 1.0  # the documented bound, and slack
        assert await a.server.presence("room:1") == [member("ann")]

        # It comes back: its next renewal finds it was dropped, and registers zed again.
        monkeypatch.undo()
        assert await event(ann) == ("join", member("zed"))
        assert await a.server.presence_count("room:1") == 2


async def test_reads_leave_out_a_dead_process_at_once(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await start(listeners=LISTENERS, presence_timeout=SHORT)
    dying = await start(listeners=LISTENERS, presence_timeout=SHORT)
    async with dying.client("zed") as zed:
        await subscribed(zed, "room:2")

        async def dead() -> None:
            return None

        monkeypatch.setattr(dying.server.presence_tracker, "renew", dead)

        async def gone() -> bool:
            return await a.server.presence_count("room:2") == 0

        await eventually(gone, within=SHORT * 2 + 1)  # a has no subscriber there: reads sweep


async def test_churn_across_processes_ends_in_the_right_state(start: Start) -> None:
    a = await start(listeners=LISTENERS)
    b = await start(listeners=LISTENERS)
    async with a.client("watcher") as watcher:
        await subscribed(watcher, "room:c")
        for _ in range(3):
            clients = [app.client(name) for app in (a, b) for name in ("ann", "bob", "cy")]
            await asyncio.gather(*(c.expect_ready() for c in clients))
            await asyncio.gather(*(c.subscribe("room:c") for c in clients))
            await asyncio.gather(*(c.close() for c in clients[::2]))
            await asyncio.gather(*(c.close() for c in clients[1::2]))
        assert await a.server.presence("room:c") == [member("watcher", "c")]
        seen: dict[str, int] = {}
        while True:
            try:
                packet = await watcher.receive(0.5)
            except TimeoutError:
                break
            kind, who = packet.event.removeprefix("channels:"), packet.data["member"]
            seen[who["id"]] = seen.get(who["id"], 0) + (1 if kind == "join" else -1)
            assert seen[who["id"]] in (0, 1)  # joins and leaves alternate for each member
        assert seen == {"ann": 0, "bob": 0, "cy": 0}


async def test_a_broker_without_presence_is_refused_at_start(start: Start) -> None:
    with pytest.raises(RuntimeError, match="presence"):
        await start(listeners=[Room], broker=BareBroker())
    with pytest.raises(ConfigurationError):
        await start(listeners=[Room], presence_timeout=0)


async def test_presence_follows_the_first_connection_info(start: Start) -> None:
    app: Harness = await start(listeners=LISTENERS)
    async with app.client("ann") as ann, app.client("ann") as again:
        await subscribed(ann, "room:1")
        assert await subscribed(again, "room:1") == [member("ann")]
        await ann.assert_no_message()


async def test_a_process_back_from_a_redis_outage_lists_the_members_again(
    redis_url: str, redis_prefix: str
) -> None:
    """Joins and leaves announced while a process was cut off from Redis are not replayed: its
    subscribers get the member list again instead."""
    fast = {"prefix": redis_prefix, "reconnect_delay": (0.02, 0.1), "timeout": 1.0}
    async with tcp_proxy(urlsplit(redis_url).port or 6379) as proxy:
        cut_off = RedisBroker(f"redis://127.0.0.1:{proxy.port}/0", **fast)
        a = Harness.build(listeners=LISTENERS, broker=cut_off)
        b = Harness.build(listeners=LISTENERS, broker=RedisBroker(redis_url, **fast))
        async with (
            lifespan(a.app),
            lifespan(b.app),
            a.client("ann") as ann,
            b.client("bob") as bob,
        ):
            await subscribed(ann, "room:1")
            proxy.down = True
            proxy.drop()
            async with asyncio.timeout(TIMEOUT):
                await cut_off.wait_for_state(BrokerState.RECONNECTING)
            assert await subscribed(bob, "room:1") == [member("ann"), member("bob")]
            filled = a.server.reconnects.filled
            proxy.down = False
            async with asyncio.timeout(TIMEOUT):
                await filled.wait()
            packet = await ann.receive(TIMEOUT)
            assert packet.event == "channels:presence"
            assert packet.data["members"] == [member("ann"), member("bob")]


def test_only_presence_announcements_are_applied_to_a_member_list() -> None:
    """A channel event named like an announcement is sent, whatever its data."""
    from fastapi_channels.core.catchup import _changes

    members = {"ann"}
    join = '{"event":"channels:join","data":{"channel":"room:1","member":{"id":"ann"}}}'
    assert not _changes(members, join)  # ann is listed already
    lookalike = '{"event":"channels:join","channel":"room:1","data":"ann"}'
    assert _changes(members, lookalike)
    assert _changes(members, '{"event":"channels:leave","data":null}')
    assert members == {"ann"}
