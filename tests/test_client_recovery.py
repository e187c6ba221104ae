"""The Python client on history and presence channels: positions, recovery, member lists.

Against ``tests/client_app.py`` under uvicorn, through a proxy that drops connections the way a
network failure does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from fastapi_channels.client import Backoff, ChannelsClient, Packet, Position
from tests.proxy import TcpProxy

TIMEOUT = 5.0


def client(port: int, token: str) -> ChannelsClient:
    return ChannelsClient(
        f"ws://127.0.0.1:{port}/ws",
        token=token,
        reconnect=Backoff(initial=0.02, maximum=0.1),
        request_timeout=TIMEOUT,
    )


async def publish(address: str, channel: str, data: Any) -> int:
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        response = await http.post(
            "/_test/publish", json={"channel": channel, "event": "said", "data": data}
        )
        response.raise_for_status()
        offset: int = response.json()["offset"]
        return offset


async def next_subscription(c: ChannelsClient) -> dict[str, Any]:
    """The next ``channels:subscription`` event (a re-subscription after a reconnect)."""
    async with c.packets("channels:subscription") as events:
        packet = await events.get(TIMEOUT)
    data: dict[str, Any] = packet.data
    return data


async def test_missed_events_are_replayed_after_a_drop(address: str, proxy: TcpProxy) -> None:
    async with client(proxy.port, "user-ann") as ann:
        feed = await ann.subscribe("feed:r")
        assert feed.position is not None and feed.position.offset == 0
        epoch = feed.position.epoch
        async with feed.packets("said") as said:
            for n in range(2):
                await publish(address, "feed:r", n)
            assert [(await said.get(TIMEOUT)).data for _ in range(2)] == [0, 1]
            assert feed.position == Position(2, epoch)

            proxy.down = True  # the client cannot come back yet
            resubscribed = asyncio.ensure_future(next_subscription(ann))
            proxy.drop()
            for n in range(2, 5):
                await publish(address, "feed:r", n)
            proxy.down = False
            answer = await resubscribed
            assert answer["recovered"] is True and answer["resubscribed"] is True
            assert feed.recovered is True
            await publish(address, "feed:r", 5)
            replayed = [await said.get(TIMEOUT) for _ in range(4)]
        assert [(p.data, p.position) for p in replayed] == [
            (n, Position(n + 1, epoch)) for n in range(2, 6)
        ]
        assert feed.position == Position(6, epoch)


async def test_a_gap_too_old_to_replay_is_reported(address: str, proxy: TcpProxy) -> None:
    async with client(proxy.port, "user-bo") as bo:
        feed = await bo.subscribe("feed:g")
        async with feed.packets("said") as said:
            await publish(address, "feed:g", "seen")
            await said.get(TIMEOUT)
        proxy.down = True
        resubscribed = asyncio.ensure_future(next_subscription(bo))
        proxy.drop()
        for n in range(25):  # more than the 20 the channel keeps
            await publish(address, "feed:g", n)
        proxy.down = False
        answer = await resubscribed
        assert answer["recovered"] is False  # the app reloads its state
        assert feed.recovered is False
        assert feed.position is not None and feed.position.offset == 26
        assert answer["position"] == {"offset": 26, "epoch": feed.position.epoch}


async def test_subscribing_since_a_kept_position(address: str) -> None:
    port = int(address.rsplit(":", 1)[1])
    async with client(port, "user-cy") as cy:
        first = await cy.subscribe("feed:k")
        assert first.position is not None
        kept = first.position
    for n in range(3):
        await publish(address, "feed:k", n)
    async with client(port, "user-cy") as cy, cy.packets("said", channel="feed:k") as said:
        feed = await cy.subscribe("feed:k", since=kept)
        assert feed.recovered is True
        assert [(await said.get(TIMEOUT)).data for _ in range(3)] == [0, 1, 2]


async def test_members_follow_the_presence_events(address: str) -> None:
    port = int(address.rsplit(":", 1)[1])
    async with client(port, "user-dee") as dee:
        joined: list[Any] = []
        feed = await dee.subscribe("feed:p")
        feed.on("channels:join", lambda packet: joined.append(packet.data["member"]))
        async with dee.packets("channels:presence") as lists:
            assert (await lists.get(TIMEOUT)).data == {
                "channel": "feed:p",
                "members": [{"id": "dee"}],
            }
        assert feed.members == {"dee": {"id": "dee"}}
        async with dee.packets("channels:leave") as leaves, dee.packets("channels:join") as joins:
            async with client(port, "user-eli") as eli:
                await eli.subscribe("feed:p")
                packet: Packet = await joins.get(TIMEOUT)
                assert packet.data == {"channel": "feed:p", "member": {"id": "eli"}}
                assert set(feed.members) == {"dee", "eli"}
            await leaves.get(TIMEOUT)
        assert feed.members == {"dee": {"id": "dee"}}
        assert joined == [{"id": "eli"}]


async def test_a_partial_member_list_is_merged_until_a_complete_one(address: str) -> None:
    port = int(address.rsplit(":", 1)[1])
    async with client(port, "user-fay") as fay, client(port, "user-gus") as gus:
        await gus.subscribe("feed:q")
        feed = await fay.subscribe("feed:q")
        async with fay.packets("channels:presence") as lists:
            await lists.get(TIMEOUT)
            assert set(feed.members) == {"fay", "gus"}

            async def listed(members: list[dict[str, str]], partial: bool) -> None:
                data: dict[str, Any] = {"channel": "feed:q", "members": members}
                if partial:
                    data["partial"] = True
                async with httpx.AsyncClient(base_url=f"http://{address}") as http:
                    body = {"user": "fay", "event": "channels:presence", "data": data}
                    (await http.post("/_test/send", json=body)).raise_for_status()
                assert (await lists.get(TIMEOUT)).data == data

            await listed([], partial=True)  # a store refilling after a restart: nobody yet
            assert set(feed.members) == {"fay", "gus"}
            await listed([{"id": "fay", "name": "Fay"}], partial=True)
            assert feed.members["fay"] == {"id": "fay", "name": "Fay"} and "gus" in feed.members
            await listed([{"id": "fay"}], partial=False)  # complete: gus has gone meanwhile
            assert feed.members == {"fay": {"id": "fay"}}
