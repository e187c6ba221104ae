from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI

from fastapi_channels import (
    ChannelListener,
    Channels,
    CloseCode,
    ErrorCode,
    SocketListener,
    SocketServer,
    channel,
    listener,
)
from fastapi_channels.auth import JWTAuth, Key, KeySet, TokenUser, TokenVerifier
from fastapi_channels.testing import SocketTestClient, lifespan
from fastapi_channels.wire.errors import ConfigurationError

from .auth_support import OTHER_SECRET, SECRET, claims, forge, hmac_auth, hs256, short_lived


@channel("private:*")
class PrivateChannel(ChannelListener):
    require_user = True

    @channel.on("knock")
    async def knock(self, connection: Any, user: Any, packet: Any) -> None:
        await connection.send_to_channel(self.channel_name, "answer", {"user": user.id})


@channel("public")
class PublicChannel(ChannelListener):
    pass


@listener("whoami")
class WhoAmI(SocketListener):
    async def handle(self, connection: Any, user: TokenUser | None, packet: Any) -> None:
        data = None if user is None else {"id": user.id, "name": user.claims.get("name")}
        await connection.send("whoami", data)


@listener("secret")
class Secret(SocketListener):
    require_user = True

    async def handle(self, connection: Any, user: Any, packet: Any) -> None:
        await connection.send("secret", "42")


LISTENERS = (PrivateChannel, PublicChannel, WhoAmI, Secret)


@asynccontextmanager
async def running(auth: Any, **options: Any) -> AsyncIterator[tuple[FastAPI, Channels]]:
    channels = Channels(user=auth, listeners=LISTENERS, **options)
    app = FastAPI()
    app.include_router(channels.router)
    async with lifespan(app):
        yield app, channels


async def whoami(client: SocketTestClient) -> Any:
    await client.emit("whoami")
    packet = await client.receive()
    assert packet.event == "whoami"
    return packet.data


async def expect_refusal(client: SocketTestClient, reason: str) -> None:
    packet = await client.connect()
    assert packet.event == "disconnect" and packet.data == {"reason": reason}
    assert await client.receive_closed() == (CloseCode.NORMAL, reason)


# ---------------------------------------------------------------- token sources


async def test_envuso_token_as_subprotocol_is_echoed() -> None:
    token = hs256(claims())
    async with (
        running(hmac_auth()) as (app, _),
        SocketTestClient(app, subprotocols=[token]) as client,
    ):
        assert client.subprotocol == token
        assert (await whoami(client))["id"] == "42"


async def test_bearer_pair_echoes_the_marker_only() -> None:
    token = hs256(claims())
    async with (
        running(hmac_auth()) as (app, _),
        SocketTestClient(app, subprotocols=["bearer", token]) as client,
    ):
        assert client.subprotocol == "bearer"
        assert (await whoami(client))["id"] == "42"


async def test_authorization_header() -> None:
    headers = [("authorization", f"Bearer {hs256(claims())}")]
    async with running(hmac_auth()) as (app, _), SocketTestClient(app, headers=headers) as client:
        assert client.subprotocol is None
        assert (await whoami(client))["id"] == "42"


async def test_cookie_from_the_same_origin() -> None:
    auth = hmac_auth(sources=["cookie"])
    headers = [("cookie", f"access_token={hs256(claims())}")]
    async with running(auth) as (app, _), SocketTestClient(app, headers=headers) as client:
        assert (await whoami(client))["id"] == "42"


async def test_query_parameter_only_when_enabled() -> None:
    query = f"token={hs256(claims())}"
    async with (
        running(hmac_auth(sources=["subprotocol", "query"])) as (app, _),
        SocketTestClient(app, query_string=query) as client,
    ):
        assert (await whoami(client))["id"] == "42"
    async with (
        running(hmac_auth()) as (app, _),
        SocketTestClient(app, query_string=query) as client,
    ):
        assert await whoami(client) is None


@pytest.mark.parametrize("offered", [[], ["null"], ["undefined"], ["bearer"]])
async def test_no_token_is_anonymous(offered: list[str]) -> None:
    async with (
        running(hmac_auth()) as (app, _),
        SocketTestClient(app, subprotocols=offered) as client,
    ):
        assert client.subprotocol == (offered[0] if offered else None)
        assert await whoami(client) is None


# ---------------------------------------------------------------- anonymous connections


async def test_anonymous_connections_cannot_use_what_requires_a_user() -> None:
    async with running(hmac_auth()) as (app, _), SocketTestClient(app) as client:
        response = await client.subscribe("private:1")
        assert response == {
            "channel": "private:1",
            "successful": False,
            "reason": "authentication required",
        }
        assert (await client.subscribe("public"))["successful"]
        await client.emit("secret")
        error = await client.receive()
        assert error.event == "channels:error"
        assert error.data["code"] == ErrorCode.UNAUTHENTICATED


async def test_authenticated_connections_can() -> None:
    token = hs256(claims())
    async with (
        running(hmac_auth()) as (app, _),
        SocketTestClient(app, subprotocols=[token]) as client,
    ):
        assert (await client.subscribe("private:1"))["successful"]
        await client.emit("knock", channel="private:1")
        answer = await client.receive()
        assert answer.channel == "private:1" and answer.data == {"user": "42"}


@pytest.mark.parametrize("offered", [[], ["null"]])
async def test_required_auth_refuses_anonymous_at_the_handshake(offered: list[str]) -> None:
    async with running(hmac_auth().required) as (app, _):
        client = SocketTestClient(app, subprotocols=offered)
        await expect_refusal(client, "authentication required")
        assert client.subprotocol == (offered[0] if offered else None)


# ---------------------------------------------------------------- refusals

NOW = int(time.time())
ROTATED = KeySet([Key.hmac(SECRET, kid="2024-01"), Key.hmac(OTHER_SECRET, kid="2024-02")])
KID = "2024-01"
BAD_TOKENS = {
    "malformed": ("not-a-jwt", "malformed"),
    "wrong-signature": (hs256(claims(), OTHER_SECRET, kid=KID), "signature"),
    "alg-none": (forge({"alg": "none", "kid": KID}, claims(), None), "algorithm"),
    "wrong-algorithm": (forge({"alg": "HS384", "kid": KID}, claims(), SECRET), "algorithm"),
    "expired": (hs256(claims(exp=NOW - 60), kid=KID), "expired"),
    "not-yet-valid": (hs256(claims(nbf=NOW + 600), kid=KID), "not-yet-valid"),
    "wrong-audience": (hs256(claims(aud="other"), kid=KID), "audience"),
    "unknown-kid": (hs256(claims(), kid="2023-12"), "unknown-key"),
    "no-kid": (hs256(claims()), "unknown-key"),
    "oversized": ("x" * 9000, "oversized"),
}


@pytest.mark.parametrize(("token", "failure"), BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_every_refusal_is_generic_on_the_wire_and_specific_in_the_log(
    token: str, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    auth = JWTAuth(TokenVerifier(ROTATED))
    caplog.set_level(logging.INFO, logger="fastapi_channels")
    async with running(auth) as (app, _):
        client = SocketTestClient(app, subprotocols=["bearer", token])
        await expect_refusal(client, "authentication failed")
        assert client.subprotocol == "bearer"
    refusals = [r.getMessage() for r in caplog.records if r.name == "fastapi_channels.auth"]
    assert len(refusals) == 1 and refusals[0].startswith(f"authentication refused: {failure} (")
    assert all(token not in record.getMessage() for record in caplog.records)


async def test_wrong_issuer_is_refused() -> None:
    auth = JWTAuth(TokenVerifier(Key.hmac(SECRET), issuer="https://issuer.test"))
    async with running(auth) as (app, _):
        bad = hs256(claims(iss="https://evil.test"))
        await expect_refusal(SocketTestClient(app, subprotocols=[bad]), "authentication failed")
        good = hs256(claims(iss="https://issuer.test"))
        async with SocketTestClient(app, subprotocols=[good]) as client:
            assert (await whoami(client))["id"] == "42"


async def test_rotated_keys_both_authenticate() -> None:
    auth = JWTAuth(TokenVerifier(ROTATED))
    old = hs256(claims(sub="1"), SECRET, kid="2024-01")
    new = hs256(claims(sub="2"), OTHER_SECRET, kid="2024-02")
    async with running(auth) as (app, _):
        for token, sub in ((old, "1"), (new, "2")):
            async with SocketTestClient(app, subprotocols=[token]) as client:
                assert (await whoami(client))["id"] == sub


async def test_forbidden_origin_is_refused_before_the_token_is_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = hmac_auth(sources=["cookie"], origins=["https://app.example.com"])
    cookie = ("cookie", f"access_token={hs256(claims())}")
    caplog.set_level(logging.INFO, logger="fastapi_channels.auth")
    async with running(auth) as (app, _):
        hijack = SocketTestClient(app, headers=[cookie, ("origin", "https://evil.test")])
        await expect_refusal(hijack, "origin not allowed")
        allowed = SocketTestClient(app, headers=[cookie, ("origin", "https://app.example.com")])
        async with allowed as client:
            assert (await whoami(client))["id"] == "42"
    [message] = [r.getMessage() for r in caplog.records if r.name == "fastapi_channels.auth"]
    assert "origin 'https://evil.test' is not allowed" in message


async def test_default_origin_check_with_cookies_is_same_origin() -> None:
    headers = [("cookie", f"access_token={hs256(claims())}"), ("origin", "http://elsewhere.test")]
    async with running(hmac_auth(sources=["cookie"])) as (app, _):
        await expect_refusal(SocketTestClient(app, headers=headers), "origin not allowed")


# ---------------------------------------------------------------- expiry and renewal


async def test_connection_is_closed_when_its_token_expires() -> None:
    token, expires = short_lived()
    async with (
        running(hmac_auth()) as (app, channels),
        SocketTestClient(app, subprotocols=[token]) as client,
    ):
        assert (await client.subscribe("public"))["successful"]
        assert channels.extensions[0].pending == 1  # type: ignore[attr-defined]
        packet = await client.receive(timeout=5)
        assert time.time() >= expires - 0.01  # the loop may run a timer a hair early
        assert packet.event == "disconnect" and packet.data == {"reason": "token expired"}
        assert await client.receive_closed() == (CloseCode.TOKEN_EXPIRED, "token expired")


async def test_leeway_delays_the_expiry() -> None:
    token, expires = short_lived()
    auth = JWTAuth(TokenVerifier(Key.hmac(SECRET), leeway=0.5))
    async with running(auth) as (app, _), SocketTestClient(app, subprotocols=[token]) as client:
        packet = await client.receive(timeout=5)
        assert packet.data == {"reason": "token expired"}
        assert time.time() >= expires + 0.5 - 0.01  # the loop may run a timer a hair early


async def renew(client: SocketTestClient, data: Any) -> dict[str, Any]:
    await client.emit("channels:authenticate", data)
    packet = await client.receive()
    assert packet.event == "channels:authenticate-response"
    return dict(packet.data)


async def test_renewal_keeps_the_connection_and_its_subscriptions() -> None:
    token, expires = short_lived(name="before")
    async with (
        running(hmac_auth()) as (app, channels),
        SocketTestClient(app, subprotocols=[token]) as client,
    ):
        assert (await client.subscribe("public"))["successful"]
        fresh = hs256(claims(lifetime=60, name="after"))
        response = await renew(client, {"token": fresh})
        assert response == {
            "successful": True,
            "expires_at": pytest.approx(time.time() + 60, abs=2),
        }
        # The old expiry passes without a disconnect.
        await client.assert_no_message(timeout=expires - time.time() + 0.3)
        server = channels.container.get(SocketServer)
        await server.broadcast(PublicChannel, "public", "news", {"n": 1})
        news = await client.receive()
        assert news.event == "news" and news.channel == "public"
        assert await whoami(client) == {"id": "42", "name": "after"}


async def test_renewal_for_another_user_is_refused_and_the_token_still_expires(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token, _ = short_lived()
    caplog.set_level(logging.INFO, logger="fastapi_channels.auth")
    async with (
        running(hmac_auth()) as (app, _),
        SocketTestClient(app, subprotocols=[token]) as client,
    ):
        response = await renew(client, {"token": hs256(claims(sub="43", lifetime=60))})
        assert response == {"successful": False, "reason": "authentication failed"}
        assert await whoami(client) == {"id": "42", "name": None}
        packet = await client.receive(timeout=5)
        assert packet.data == {"reason": "token expired"}
    messages = [r.getMessage() for r in caplog.records if r.name == "fastapi_channels.auth"]
    assert any(m.startswith("authentication refused: subject-changed") for m in messages)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"token": hs256(claims(), OTHER_SECRET)}, "authentication failed"),
        ({"token": hs256(claims(lifetime=-60))}, "authentication failed"),
        ({"token": 5}, "data.token must be a string"),
        (None, "data.token must be a string"),
        ("token", "data.token must be a string"),
    ],
    ids=["bad-signature", "expired", "not-a-string", "no-data", "data-not-an-object"],
)
async def test_failed_renewals_change_nothing(data: Any, reason: str) -> None:
    token = hs256(claims(lifetime=60))
    async with (
        running(hmac_auth()) as (app, _),
        SocketTestClient(app, subprotocols=[token]) as client,
    ):
        assert (await client.subscribe("private:1"))["successful"]
        assert await renew(client, data) == {"successful": False, "reason": reason}
        await client.emit("knock", channel="private:1")
        assert (await client.receive()).data == {"user": "42"}


async def test_anonymous_connections_cannot_renew() -> None:
    async with running(hmac_auth()) as (app, _), SocketTestClient(app) as client:
        response = await renew(client, {"token": hs256(claims())})
        assert response == {"successful": False, "reason": "authentication required"}
        assert await whoami(client) is None


async def test_timers_are_cancelled_when_connections_close() -> None:
    auth = hmac_auth()
    async with running(auth) as (app, _):
        clients = [
            SocketTestClient(app, subprotocols=[hs256(claims(lifetime=600))]) for _ in range(3)
        ]
        for client in clients:
            await client.expect_ready()
        assert auth.connection_extension.pending == 3
        for client in clients:
            await client.close()
        assert auth.connection_extension.pending == 0


async def test_a_token_without_exp_sets_no_timer() -> None:
    auth = JWTAuth(TokenVerifier(Key.hmac(SECRET), required_claims=("sub",)))
    async with (
        running(auth) as (app, _),
        SocketTestClient(app, subprotocols=[hs256({"sub": "1"})]) as client,
    ):
        assert (await whoami(client))["id"] == "1"
        assert auth.connection_extension.pending == 0


# ---------------------------------------------------------------- wiring


def test_channels_adds_the_extension_of_its_auth_dependency_once() -> None:
    auth = hmac_auth()
    assert Channels(user=auth).extensions == [auth.connection_extension]
    assert Channels(user=auth.required).extensions == [auth.connection_extension]
    explicit = Channels(user=auth, extensions=[auth.connection_extension])
    assert explicit.extensions == [auth.connection_extension]

    async def wrapper() -> None:
        return None

    assert Channels(user=wrapper).extensions == []


def test_listeners_cannot_take_the_renewal_event() -> None:
    with pytest.raises(ConfigurationError, match="reserved"):

        @listener("channels:authenticate")
        class Renew(SocketListener):
            async def handle(self, connection: Any, user: Any, packet: Any) -> None:
                pass


async def load_user(token_claims: Mapping[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"id": token_claims["sub"], "loaded": True}


async def test_user_loader_result_is_the_connection_user() -> None:
    auth = JWTAuth(TokenVerifier(Key.hmac(SECRET)), user_loader=load_user)
    async with (
        running(auth) as (app, channels),
        SocketTestClient(app, subprotocols=[hs256(claims())]) as client,
    ):
        [connection] = channels.server.connections
        assert connection.user == {"id": "42", "loaded": True}
        assert connection.user_key == "42"
        assert client.ready is not None


async def test_renewal_with_an_id_gets_exactly_one_reply_with_the_response() -> None:
    token, _ = short_lived(name="before")
    async with (
        running(hmac_auth()) as (app, _),
        SocketTestClient(app, subprotocols=[token]) as client,
    ):
        fresh = hs256(claims(lifetime=60, name="after"))
        await client.emit("channels:authenticate", {"token": fresh}, id="r1")
        response = await client.receive()
        assert response.event == "channels:authenticate-response"
        reply = await client.receive()
        assert reply == {"event": "channels:reply", "id": "r1", "data": response.data}
        await client.assert_no_message()
