"""The Python client and the server's control: reconnect advice, server-side subscriptions.

Against ``tests/client_app.py`` served by uvicorn: ``/_test/restart`` ends every connection as
a restart does (the server stays up for the clients' return), ``/_test/user-subscription``
calls ``subscribe_user``/``unsubscribe_user``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi_channels.client import Backoff, ClientState
from fastapi_channels.client._handshake import handshake_arguments
from tests.test_client import client, next_state, post


async def test_after_a_restart_the_client_waits_the_advised_delay(address: str) -> None:
    # A backoff far shorter than the advice: the wait seen is the advice's.
    async with client(address, token="user-ora", reconnect=Backoff(initial=0.01)) as c:
        disconnects = c.packets("disconnect")
        reconnecting = next_state(c, ClientState.RE_CONNECTING)
        back = next_state(c, ClientState.CONNECTED)
        loop = asyncio.get_running_loop()
        await post(address, "/_test/restart", {"spread": 0.8})
        advice = (await disconnects.get(timeout=5)).data["reconnect_after"]
        closed_at = loop.time()
        state = await reconnecting
        assert state["code"] == 1012
        assert advice <= state["delay"] <= advice * 1.1 + 1e-9
        await back
        assert loop.time() - closed_at >= advice - 0.05  # timers may fire a hair early
        disconnects.close()


async def test_a_server_subscription_joins_the_channel_table_and_outlives_a_reconnect(
    address: str,
) -> None:
    async with client(address, token="user-sam") as c:
        heard: list[Any] = []
        subscribed = c.packets("channels:subscribed")

        @c.on("channels:subscribed")
        def attach(packet: Any) -> None:  # the channel's first events wait for this
            c.channels[packet.data["channel"]].on("said", lambda p: heard.append(p.data))

        await post(address, "/_test/user-subscription", {"user": "sam", "channel": "public:s"})
        assert (await subscribed.get(timeout=5)).data == {"channel": "public:s"}
        channel = c.channels["public:s"]
        assert channel.state == "subscribed"
        async with channel.packets("said") as said:
            await post(
                address, "/_test/publish", {"channel": "public:s", "event": "said", "data": 1}
            )
            assert (await said.get(timeout=5)).data == 1

            # A lost connection: the client subscribes again to what the server gave it.
            resubscribed = c.packets("channels:subscription")
            await post(address, "/_test/close", {"code": 1012, "reason": "restart"})
            answer = await resubscribed.get(timeout=5)
            assert answer.data["channel"] == "public:s" and answer.data["resubscribed"] is True
            await post(
                address, "/_test/publish", {"channel": "public:s", "event": "said", "data": 2}
            )
            assert (await said.get(timeout=5)).data == 2
            resubscribed.close()
        assert heard == [1, 2]

        unsubscribed = c.packets("channels:unsubscribed")
        body = {"user": "sam", "channel": "public:s", "subscribe": False}
        await post(address, "/_test/user-subscription", body)
        assert (await unsubscribed.get(timeout=5)).data == {"channel": "public:s"}
        assert "public:s" not in c.channels and channel.state == "unsubscribed"
        subscribed.close()
        unsubscribed.close()


async def test_the_client_announces_what_it_understands(address: str) -> None:
    url, _, _ = handshake_arguments(f"ws://{address}/ws?x=1", {}, None, "subprotocol")
    assert url == f"ws://{address}/ws?x=1&channels-features=reconnect-advice,server-subscriptions"
