"""The Python client against a real server (tests/client_app.py under uvicorn, over loopback)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from fastapi_channels import ChannelsError, Limits
from fastapi_channels.client import (
    Backoff,
    Channel,
    ChannelsClient,
    ClientState,
    ConnectFailed,
    ConnectionClosed,
    Packet,
    Refused,
    RenewalError,
    ReplyError,
    SubscriptionDenied,
    should_reconnect,
)
from tests.client_app import create_app, create_jwt_app
from tests.live import live_server
from tests.proxy import TcpProxy

FAST = Backoff(initial=0.02, maximum=0.2)


async def post(address: str, path: str, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        (await http.post(path, json=body)).raise_for_status()


def client(address: str, path: str = "/ws", **options: Any) -> ChannelsClient:
    options.setdefault("reconnect", FAST)
    options.setdefault("request_timeout", 5.0)
    return ChannelsClient(f"ws://{address}{path}", **options)


async def whoami(c: ChannelsClient) -> Any:
    async with c.packets("whoami") as replies:
        await c.emit("whoami")
        return (await replies.get(timeout=5)).data


def next_state(c: ChannelsClient, state: ClientState, timeout: float = 5) -> Awaitable[Any]:
    """Wait for ``state``; the stream is registered at once, before the action that causes it."""
    stream = c.packets("channels:state")

    async def wait() -> dict[str, Any]:
        async with stream, asyncio.timeout(timeout):
            async for packet in stream:
                if packet.data["state"] == state:
                    return dict(packet.data)
        raise AssertionError("the client stopped first")

    return wait()


# ---------------------------------------------------------------------- connect


async def test_connect_reports_the_connection_id_and_states(address: str) -> None:
    c = client(address, token="user-alice")
    states: list[str] = []
    c.on("channels:state", lambda packet: states.append(packet.data["state"]))
    async with c:
        assert c.connected
        assert c.id is not None and len(c.id) == 32
    assert states == ["connecting", "connected", "disconnected"]
    assert c.state is ClientState.DISCONNECTED


@pytest.mark.parametrize("transport", ["subprotocol", "bearer", "header", "query"])
async def test_each_token_transport_authenticates(address: str, transport: Any) -> None:
    async with client(address, token="user-bob", token_transport=transport) as c:
        assert await whoami(c) == {"user": "bob", "token": "user-bob"}


async def test_no_token_connects_anonymously(address: str) -> None:
    async with client(address, token=lambda: None) as c:
        assert await whoami(c) == {"user": None, "token": None}


async def test_a_refusal_raises_with_the_reason_and_is_not_retried(address: str) -> None:
    c = client(address, token="bad-token")
    with pytest.raises(Refused) as caught:
        await c.connect(retry=True)
    assert caught.value.reason == "invalid token"
    assert c.state is ClientState.DISCONNECTED


async def test_an_unreachable_server_fails_the_attempt(address: str, proxy: TcpProxy) -> None:
    proxy.down = True
    c = client(f"127.0.0.1:{proxy.port}", token="user-x")
    with pytest.raises(ConnectFailed):
        await c.connect()
    with pytest.raises(ConnectFailed):
        await client(f"127.0.0.1:{proxy.port}", reconnect=Backoff(0.01, max_attempts=2)).connect(
            retry=True
        )


async def test_connect_with_retry_waits_for_the_server(address: str, proxy: TcpProxy) -> None:
    proxy.down = True
    c = client(f"127.0.0.1:{proxy.port}", token="user-x")
    attempts: list[int] = []

    def on_state(packet: Packet) -> None:
        if packet.data["state"] == "re-connecting":
            attempts.append(packet.data["attempt"])
            if len(attempts) == 3:
                proxy.down = False

    c.on("channels:state", on_state)
    await c.connect(retry=True)
    assert attempts == [1, 2, 3]
    await c.close()


# ---------------------------------------------------------------------- subscriptions


async def test_subscribe_granted_denied_and_unknown(address: str) -> None:
    async with client(address, token="user-erin") as c:
        channel = await c.subscribe("private:erin")
        assert isinstance(channel, Channel)
        assert channel.state == "subscribed"
        assert await c.subscribe("private:erin") is channel
        with pytest.raises(SubscriptionDenied) as denied:
            await c.subscribe("private:frank")
        assert (denied.value.channel, denied.value.reason) == ("private:frank", "not authorised")
        assert "private:frank" not in c.channels
        with pytest.raises(SubscriptionDenied, match="no channel matches"):
            await c.subscribe("nowhere")


async def test_subscribe_before_connect_raises(address: str) -> None:
    with pytest.raises(ConnectionClosed):
        await client(address).subscribe("public:x")


async def test_channel_events_reach_callbacks_and_streams(address: str) -> None:
    async with client(address, token="user-gil") as c:
        room = await c.subscribe("public:room")
        seen: list[Any] = []
        done = asyncio.Event()

        @room.on("said")
        async def record(packet: Packet) -> None:
            seen.append(packet.data)
            done.set()

        room.on("said", lambda packet: seen.append(("sync", packet.channel)))
        async with room.packets("said") as said:
            await room.emit("say", {"text": "hi"})
            packet = await said.get(timeout=5)
        assert (packet.channel, packet.data) == ("public:room", {"text": "hi"})
        async with asyncio.timeout(5):
            await done.wait()
        assert sorted(map(str, seen)) == sorted(map(str, [{"text": "hi"}, ("sync", "public:room")]))


async def test_events_published_by_the_app_arrive_and_stop_after_unsubscribe(
    address: str,
) -> None:
    async with client(address, token="user-hana") as c:
        news = await c.subscribe("public:news")
        other = await c.subscribe("public:other")
        async with c.packets(event="headline") as headlines:
            await post(
                address,
                "/_test/publish",
                {"channel": "public:news", "event": "headline", "data": 1},
            )
            assert (await headlines.get(timeout=5)).data == 1
            await news.unsubscribe()
            assert news.state == "unsubscribed"
            await post(
                address,
                "/_test/publish",
                {"channel": "public:news", "event": "headline", "data": 2},
            )
            await post(
                address,
                "/_test/publish",
                {"channel": "public:other", "event": "headline", "data": 3},
            )
            # published after the second one: had that been delivered, it would come first
            assert (await headlines.get(timeout=5)).data == 3
        assert other.state == "subscribed"


# ---------------------------------------------------------------------- plain events


async def test_plain_events_and_async_for(address: str) -> None:
    async with client(address, token="user-ida") as c:
        seen: list[Any] = []
        c.on("echo", lambda packet: seen.append(packet.data))
        stream = c.packets()
        await c.emit("echo", {"n": 1})
        await c.emit("echo", {"n": 2})
        received = []
        async with asyncio.timeout(5):
            async for packet in stream:
                received.append(packet.data)
                if len(received) == 2:
                    break
        stream.close()
        assert received == [{"n": 1}, {"n": 2}]
        assert seen == [{"n": 1}, {"n": 2}]


async def test_server_errors_and_failing_callbacks_are_logged_not_raised(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "fastapi_channels.client")
    async with client(address, token="user-jo") as c:

        def broken(packet: Packet) -> None:
            raise RuntimeError("boom")

        c.on("echo", broken)
        async with c.packets("channels:error") as errors:
            await c.emit("no-such-event", {})
            assert (await errors.get(timeout=5)).data["code"] == "unknown-event"
        async with c.packets("echo") as echoes:
            await c.emit("echo", 1)
            await echoes.get(timeout=5)
        assert c.connected
    assert "a callback for 'echo' failed" in caplog.text


async def test_emit_while_not_connected_raises(address: str) -> None:
    with pytest.raises(ConnectionClosed):
        await client(address).emit("echo", 1)


# ---------------------------------------------------------------------- requests


async def test_requests_are_matched_to_replies_by_id(address: str) -> None:
    async with client(address, "/replies") as c:
        first, second = await asyncio.gather(c.request("add", {"n": 1}), c.request("add", {"n": 2}))
        assert first == {"event": "add", "data": {"n": 1}}
        assert second == {"event": "add", "data": {"n": 2}}
        with pytest.raises(ReplyError) as failed:
            await c.request("fail")
        assert failed.value.code == "rejected"
        with pytest.raises(TimeoutError):
            await c.request("ignore", timeout=0.05)


async def test_a_pending_request_fails_when_the_connection_is_lost(
    address: str, proxy: TcpProxy
) -> None:
    async with client(f"127.0.0.1:{proxy.port}", "/replies") as c:
        lost = next_state(c, ClientState.RE_CONNECTING)
        pending = asyncio.ensure_future(c.request("ignore"))
        proxy.drop()
        await lost
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(pending, 5)


# ---------------------------------------------------------------------- reconnecting


async def test_reconnects_after_a_drop_and_subscribes_again(address: str, proxy: TcpProxy) -> None:
    async with client(f"127.0.0.1:{proxy.port}", token="user-kim") as c:
        room = await c.subscribe("public:room")
        first_id = c.id
        async with c.packets("channels:subscription") as answers:
            proxy.drop()
            answer = await answers.get(timeout=5)
        assert answer.data == {
            "channel": "public:room",
            "successful": True,
            "reason": None,
            "resubscribed": True,
        }
        assert c.id != first_id
        assert room.state == "subscribed"
        async with room.packets("said") as said:
            await room.emit("say", "after")
            assert (await said.get(timeout=5)).data == "after"


async def test_the_token_provider_is_asked_before_each_attempt(
    address: str, proxy: TcpProxy
) -> None:
    generation = 0

    async def token() -> str:
        nonlocal generation
        generation += 1
        return f"user-lou.{generation}"

    async with client(f"127.0.0.1:{proxy.port}", token=token) as c:
        assert (await whoami(c))["token"] == "user-lou.1"
        reconnected = next_state(c, ClientState.CONNECTED)
        proxy.drop()
        await reconnected
        assert await whoami(c) == {"user": "lou", "token": "user-lou.2"}


async def test_a_refused_reconnect_stops_for_good(address: str, proxy: TcpProxy) -> None:
    tokens = iter(["user-max", "expired"])
    c = client(f"127.0.0.1:{proxy.port}", token=lambda: next(tokens))
    await c.connect()
    pending = asyncio.ensure_future(c.subscribe("public:later"))
    proxy.drop()
    async with asyncio.timeout(5):
        await c.wait_closed()
    assert isinstance(c.error, Refused)
    assert c.error.reason == "invalid token"
    assert c.state is ClientState.DISCONNECTED
    # the pending subscription was granted before the drop, or fails now: never hangs
    with contextlib.suppress(ConnectionClosed):
        await asyncio.wait_for(pending, 5)
    await c.close()


async def test_a_restart_reconnects_and_a_clean_close_stops(address: str) -> None:
    async with client(address, token="user-ned") as c:
        first_id = c.id
        back = next_state(c, ClientState.CONNECTED)
        await post(address, "/_test/close", {"code": 1012, "reason": "restart"})
        await back
        assert c.id != first_id
        await post(address, "/_test/close", {"code": 1000, "reason": "bye"})
        async with asyncio.timeout(5):
            await c.wait_closed()
        assert (c.close_code, c.close_reason) == (1000, "bye")
        assert c.state is ClientState.DISCONNECTED


async def test_close_during_the_backoff_stops_at_once(address: str, proxy: TcpProxy) -> None:
    slow = Backoff(initial=60, maximum=60, jitter=0)
    c = client(f"127.0.0.1:{proxy.port}", token="user-oz", reconnect=slow)
    await c.connect()
    waiting = next_state(c, ClientState.RE_CONNECTING)
    proxy.drop()
    assert (await waiting)["delay"] == 60
    async with asyncio.timeout(2):
        await c.close()
    assert c.state is ClientState.DISCONNECTED


# ---------------------------------------------------------------------- backoff


def test_backoff_grows_is_capped_and_jitter_only_shortens() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, factor=2, jitter=0.5)
    assert [backoff.delay(n, lambda: 0.0) for n in (0, 1, 2, 3, 4, 10)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.0,
        1.0,
    ]
    assert backoff.delay(1, lambda: 1.0) == pytest.approx(0.1)
    assert Backoff(maximum=30).delay(5000, lambda: 0.0) == 30
    assert not Backoff().gives_up_after(1000)
    assert Backoff(max_attempts=3).gives_up_after(3)


def test_the_default_rule_reconnects_unless_closed_on_purpose() -> None:
    assert all(should_reconnect(code) for code in (1001, 1006, 1011, 1012, 1013))
    assert not any(should_reconnect(code) for code in (1000, 1005, 1008))


def test_the_public_names_of_the_client() -> None:
    import fastapi_channels.client as module

    assert sorted(module.__all__) == [
        "Backoff",
        "Channel",
        "ChannelsClient",
        "ClientState",
        "ConnectFailed",
        "ConnectionClosed",
        "Packet",
        "PacketStream",
        "Position",
        "Refused",
        "RenewalError",
        "ReplyError",
        "STOP_CODES",
        "SubscriptionDenied",
        "should_reconnect",
    ]
    assert all(hasattr(module, name) for name in module.__all__)


async def test_a_reply_error_keeps_the_server_s_error_whole() -> None:
    problems = [{"loc": ["b"], "msg": "Field required", "type": "missing"}]
    errors: dict[str, Any] = {
        "typed": {"code": "invalid-data", "message": "1 validation error", "errors": problems},
        "odd": "not an object",
    }

    async def replying_server(ws: ServerConnection) -> None:
        await ws.send('{"event": "ready", "data": {"id": "x"}}')
        async for frame in ws:
            packet = json.loads(frame)
            if packet["event"] == "slow":  # answered as the server's rate limit answers
                data = {"id": packet["id"], "code": "rate-limited", "message": "slow down"}
                await ws.send(json.dumps({"event": "channels:error", "data": data}))
            else:
                error = errors[packet["event"]]
                await ws.send(
                    json.dumps({"event": "channels:reply", "id": packet["id"], "error": error})
                )

    async with serve(replying_server, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with client(f"127.0.0.1:{port}", reconnect=False) as c:
            with pytest.raises(ReplyError) as typed:
                await c.request("typed")
            with pytest.raises(ReplyError) as odd:
                await c.request("odd")
            with pytest.raises(ReplyError) as slow:
                await c.request("slow")
    assert isinstance(typed.value, ChannelsError)
    assert (typed.value.code, typed.value.message) == ("invalid-data", "1 validation error")
    assert (typed.value.errors, typed.value.error) == (problems, errors["typed"])
    assert str(typed.value) == "1 validation error"
    assert (odd.value.code, odd.value.message, odd.value.errors) == (None, "not an object", [])
    assert odd.value.error == {"message": "not an object"}
    assert (slow.value.code, str(slow.value)) == ("rate-limited", "slow down")


async def test_unexpected_frames_are_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "fastapi_channels.client")

    async def odd_server(ws: ServerConnection) -> None:
        for frame in ("not json", '{"event": "hello"}', '{"event": "ready", "data": {"id": "x"}}'):
            await ws.send(frame)
        for frame in (b"binary", "[1]", '{"event": "said", "channel": "nowhere"}'):
            await ws.send(frame)
        await ws.send('{"event": "channels:reply", "id": 99}')
        await ws.send('{"event": "ping"}')
        await ws.send(json.dumps({"event": "marker", "data": json.loads(await ws.recv())}))
        await ws.wait_closed()

    async with serve(odd_server, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        c = client(f"127.0.0.1:{port}", reconnect=False)
        async with c.packets("marker") as markers, c:
            assert (await markers.get(timeout=5)).data == {"event": "pong", "data": {}}
            assert c.connected
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "ignoring a frame that is not JSON: 'not json'",
        "ignoring 'hello' received before ready",
        "ignoring a binary frame of 6 bytes",
        "ignoring a frame that is not a packet: '[1]'",
        "ignoring 'said' for nowhere, not subscribed",
        "ignoring a reply to unknown request 99",
    ]


async def test_too_many_connections_is_a_final_refusal() -> None:
    limited = create_app(Limits(max_connections_per_user=1))
    async with live_server(limited) as address, client(address, token="user-pat"):
        with pytest.raises(Refused) as final:
            await client(address, token="user-pat").connect(retry=True)
    assert (final.value.reason, final.value.code) == ("too many connections", 1008)


async def test_server_busy_is_retried_until_a_slot_frees() -> None:
    async with live_server(create_app(Limits(max_connections=1))) as address:
        first = client(address, token="user-pat")
        await first.connect()
        waiting = client(address, token="user-quinn")
        failures: list[int] = []

        async def on_state(packet: Packet) -> None:
            if packet.data["state"] == "re-connecting":
                failures.append(packet.data["attempt"])
                if len(failures) == 2:
                    await first.close()  # free the only slot

        waiting.on("channels:state", on_state)
        await waiting.connect(retry=True)  # "server busy" closes with 1013: retried
        assert failures[:2] == [1, 2]
        assert await whoami(waiting) == {"user": "quinn", "token": "user-quinn"}
        await waiting.close()


async def test_subscribe_while_reconnecting_is_sent_once_ready(
    address: str, proxy: TcpProxy
) -> None:
    slow = Backoff(initial=0.2, maximum=0.2, jitter=0)
    async with client(f"127.0.0.1:{proxy.port}", token="user-ray", reconnect=slow) as c:
        waiting = next_state(c, ClientState.RE_CONNECTING)
        proxy.drop()
        await waiting
        channel = await c.subscribe("public:later", timeout=5)
        assert channel.state == "subscribed"
        assert c.connected


# ---------------------------------------------------------------------- the server's replies


async def test_requests_answered_by_the_server_s_listeners(address: str) -> None:
    async with client(address, token="user-sal") as c:
        assert await c.request("add", {"a": 1, "b": 2}) == {"sum": 3}
        with pytest.raises(ReplyError) as refused:
            await c.request("add", {"a": "x"})
        assert (refused.value.code, str(refused.value)) == ("rejected", "a and b must be numbers")
        assert refused.value.message == "a and b must be numbers"
        with pytest.raises(ReplyError) as unknown:
            await c.request("no-such-event")
        assert unknown.value.code == "unknown-event"
        room = await c.subscribe("public:replies")
        async with room.packets("said") as said:
            assert await room.request("say", "hi") is None
            assert (await said.get(timeout=5)).data == "hi"


# ---------------------------------------------------------------------- JWT renewal and expiry


@pytest.fixture
async def jwt_address() -> AsyncIterator[str]:
    async with live_server(create_jwt_app()) as address:
        yield address


async def issue(address: str, sub: str, lifetime: int = 60) -> str:
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        response = await http.post("/_test/token", json={"sub": sub, "lifetime": lifetime})
        token: str = response.raise_for_status().json()["token"]
        return token


async def test_renew_swaps_the_token_on_the_live_connection(jwt_address: str) -> None:
    calls = 0

    async def token() -> str:
        nonlocal calls
        calls += 1
        return await issue(jwt_address, "ann", lifetime=30 + calls)

    async with client(jwt_address, token=token) as c, c.packets("channels:renewal") as events:
        first_id = c.id
        answer = await c.renew()
        assert answer["successful"] is True
        assert (await events.get(timeout=5)).data == {
            "successful": True,
            "reason": None,
            "expires_at": answer["expires_at"],
        }
        assert calls == 2
        assert await whoami(c) == {"user": "ann", "expires_at": answer["expires_at"]}
        assert c.id == first_id


async def test_a_refused_renewal_raises_and_the_connection_goes_on(jwt_address: str) -> None:
    async with client(jwt_address, token=await issue(jwt_address, "ann")) as c:
        with pytest.raises(RenewalError) as refused:
            await c.renew(await issue(jwt_address, "bob"))
        assert refused.value.reason == "authentication failed"
        assert (await whoami(c))["user"] == "ann"


async def test_renew_before_renews_on_its_own(jwt_address: str) -> None:
    async def token() -> str:
        return await issue(jwt_address, "cy", lifetime=2)

    c = client(jwt_address, token=token, renew_before=1.5)
    async with c, c.packets("channels:renewal") as renewals:
        first_id = c.id
        first = (await renewals.get(timeout=5)).data
        second = (await renewals.get(timeout=5)).data
        assert first["successful"] and second["successful"]
        assert second["expires_at"] >= first["expires_at"]
        assert c.id == first_id


async def test_an_automatic_renewal_the_server_cannot_answer_is_logged() -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"exp": time.time() + 0.2}).encode())
    short_lived = f"e30.{claims.decode().rstrip('=')}.sig"  # renewed after 0.1 s
    logged = asyncio.Event()

    class Notify(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("renewing the token failed"):
                logged.set()

    async def no_renewal_server(ws: ServerConnection) -> None:
        await ws.send('{"event": "ready", "data": {"id": "x"}}')
        async for frame in ws:
            packet = json.loads(frame)
            error = {"code": "unknown-event", "message": "no handler for event"}
            await ws.send(
                json.dumps({"event": "channels:reply", "id": packet["id"], "error": error})
            )

    handler = Notify()
    logging.getLogger("fastapi_channels.client").addHandler(handler)
    try:
        async with serve(no_renewal_server, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            c = client(f"127.0.0.1:{port}", token=lambda: short_lived, renew_before=10)
            async with c, asyncio.timeout(5):
                await logged.wait()
                assert c.connected
    finally:
        logging.getLogger("fastapi_channels.client").removeHandler(handler)


async def test_an_expired_token_closes_with_4001_and_a_fresh_one_reconnects(
    jwt_address: str,
) -> None:
    async def token() -> str:
        return await issue(jwt_address, "dee", lifetime=2)

    async with client(jwt_address, token=token) as c:
        first_id = c.id
        lost = next_state(c, ClientState.RE_CONNECTING, timeout=8)
        back = next_state(c, ClientState.CONNECTED, timeout=8)
        state = await lost
        assert (state["code"], state["reason"]) == (4001, "token expired")
        await back
        assert c.id != first_id


async def test_events_read_with_the_subscription_answer_reach_callbacks_added_after_it() -> None:
    async def eager_server(ws: ServerConnection) -> None:
        await ws.send('{"event": "ready", "data": {"id": "x"}}')
        request = json.loads(await ws.recv())
        channel = request["data"]["channel"]
        answer = {"event": "subscribe-channel-response", "data": {"channel": channel}}
        answer["data"]["successful"] = True
        events = [{"event": "message", "channel": channel, "data": n} for n in (1, 2)]
        for packet in (answer, *events):  # one write, read by the client in one go
            ws.protocol.send_text(json.dumps(packet).encode())
        ws.transport.write(b"".join(ws.protocol.data_to_send()))
        await ws.wait_closed()

    async with serve(eager_server, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with client(f"127.0.0.1:{port}", reconnect=False) as c:
            room = await c.subscribe("room")
            got: asyncio.Queue[Any] = asyncio.Queue()
            room.on("message", lambda packet: got.put_nowait(packet.data))
            async with asyncio.timeout(5):
                assert [await got.get(), await got.get()] == [1, 2]
